import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_course import diagonal, seq2seq, tasks


class UniformAlignment(nnx.Module):
    """A test alignment: equal weights on every real source position."""

    def prepare(self, memory):
        return dict(memory, prepared=True)

    def __call__(self, s_prev, step, memory):
        mask = memory["mask"].astype(jnp.float32)
        return mask / mask.sum(-1, keepdims=True)


def test_decoder_step_follows_the_equations():
    task = tasks.get_task("translate")
    batch = tasks.make_batch(tasks.generate(task, 2, seed=0, min_length=3, max_length=6), task)
    model = seq2seq.AttentionEncoderDecoder(len(task.source_vocab), len(task.target_vocab), UniformAlignment(),
                                            embed=4, hidden=5, rngs=nnx.Rngs(0))
    memory = model.encode(batch.source, batch.source_lengths)
    assert memory["prepared"] and memory["h"].shape == batch.source.shape + (10,)
    enc = model.encoder(batch.source, batch.source_lengths)
    np.testing.assert_allclose(model.init_decoder(memory)["s"], jnp.tanh(model.init_proj(enc.backward_first)), atol=1e-6)
    state = model.init_decoder(memory)
    prev = jnp.asarray(batch.target_in[:, 0])
    logits, new_state, alpha = model.decode_step(memory, state, prev)
    # by hand: c is the mean of the real annotations; s_1 = GRU(s_0, [E y_0; c])
    c = jnp.stack([memory["h"][b, : int(n)].mean(0) for b, n in enumerate(batch.source_lengths)])
    y = model.target_embed(prev)
    s1 = model.decoder(state["s"], jnp.concatenate([y, c], -1))
    np.testing.assert_allclose(new_state["s"], s1, atol=1e-5)
    np.testing.assert_allclose(logits, model.readout(jnp.concatenate([s1, y, c], -1)), atol=1e-5)
    assert list(np.asarray(new_state["step"])) == [1, 1]


def test_bad_arguments():
    with pytest.raises(ValueError, match="alignment"):
        seq2seq.AttentionEncoderDecoder(5, 5, object(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="hidden"):
        seq2seq.AttentionEncoderDecoder(5, 5, diagonal.DiagonalAlignment(), hidden=0, rngs=nnx.Rngs(0))
