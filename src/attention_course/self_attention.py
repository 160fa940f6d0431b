"""Self-attention and the Transformer (Vaswani et al., 2017): attention becomes the whole model.

The equations of "Attention Is All You Need" (arXiv 1706.03762), each as one function or module,
in the course's row-vector convention (batch first, ``x @ W``):

* scaled dot-product attention, §3.2.1, Eq. (1)::

      Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

  :func:`scaled_dot_product_attention`, with a boolean mask (True = may attend) applied inside
  the softmax; a query that may attend to nothing gets zero weights and a zero output;
* multi-head attention, §3.2.2: ``MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O`` with
  ``head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)``: :class:`MultiHeadAttention`;
* the position-wise feed-forward network, §3.3: ``FFN(x) = max(0, x W_1 + b_1) W_2 + b_2``:
  :func:`position_wise_ffn`;
* sinusoidal positions, §3.5: ``PE(pos, 2i) = sin(pos / 10000^(2i/d_model))``,
  ``PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))``: :func:`sinusoidal_positions`;
* the learning rate with warm-up, §5.3: ``lrate = d_model^-0.5 min(step^-0.5, step warmup^-1.5)``:
  :func:`transformer_learning_rate`;
* the encoder–decoder, §3.1: :class:`Transformer`. Each sub-layer is wrapped as in the paper,
  ``LayerNorm(x + Sublayer(x))`` ("post-LN"); ``norm_first=True`` gives the "pre-LN" variant
  ``x + Sublayer(LayerNorm(x))`` that later work adopted (with one final LayerNorm per stack).

The Transformer has the decodable interface of :mod:`attention_course.decode`. Its decoder keeps a
key/value cache: one decoding step adds the new token's keys and values to the cache and attends
over it, so a step costs O(T) instead of re-running the whole prefix (O(T^2)).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from attention_course import _checks, _precision, pooling, rnn

# A list of sub-modules: nnx.List from flax 0.12 on; before it, a plain list is a graph node.
_ModuleList = getattr(nnx, "List", list)

__all__ = [
    "scaled_dot_product_attention",
    "causal_mask",
    "sinusoidal_positions",
    "position_wise_ffn",
    "transformer_learning_rate",
    "MultiHeadAttention",
    "EncoderLayer",
    "DecoderLayer",
    "Transformer",
]


# --------------------------------------------------------------------------------------------
# The equations
# --------------------------------------------------------------------------------------------


_shape = _checks.shape

def _check_attention_inputs(q, k, v, mask) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The checks of :func:`scaled_dot_product_attention`: (leading axes, ``[..., T, S]``)."""
    lead = _checks.check_qkv(q, k, v)
    scores_shape = (*lead, _shape(q)[-2], _shape(k)[-2])
    _checks.check_mask(mask, scores_shape)
    return lead, scores_shape


def scaled_dot_product_attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d_k)) v, only where ``mask`` is True (Eq. 1).

    Args:
      q: queries ``[..., T, d_k]``.
      k: keys ``[..., S, d_k]``.
      v: values ``[..., S, d_v]``.
      mask: bool, broadcastable to ``[..., T, S]``; True = query t may
        attend to key s.

    Returns:
      (out ``[..., T, d_v]``, weights ``[..., T, S]``). A query whose mask
      row is all False gets zero weights and a zero output
      (:func:`attention_course.pooling.masked_softmax`), never NaN.
      ``jax.nn.dot_product_attention`` differs there: it gives such a row
      uniform weights, so its output is the mean of the values. Both are
      in the inputs' dtype; half-precision inputs are computed in float32
      inside (:mod:`attention_course._precision`).
    """
    lead, scores_shape = _check_attention_inputs(q, k, v, mask)
    # bf16 in: f32 inside, bf16 out
    (q, k, v), dtype = _precision.inside(q, k, v)
    d_k = jnp.shape(q)[-1]
    scores = jnp.einsum("...td,...sd->...ts", q, k) / math.sqrt(d_k)
    if mask is not None:
        mask = jnp.broadcast_to(mask, scores_shape)  # [..., T, S]
    weights = pooling.masked_softmax(scores, mask)  # [..., T, S]
    v = jnp.broadcast_to(v, (*lead, *jnp.shape(v)[-2:]))  # [..., S, d_v]
    out = pooling.weighted_average(weights, v)
    return out.astype(dtype), weights.astype(dtype)


def causal_mask(T: int) -> jax.Array:
    """``[T, T]`` bool, True at (t, s) when s <= t: position t sees itself
    and the positions before it, never the ones after."""
    _checks.positive_ints(T=T)
    return jnp.tril(jnp.ones((T, T), bool))


def sinusoidal_positions(length: int, d_model: int) -> jax.Array:
    """The table PE ``[length, d_model]`` of §3.5.

    PE[pos, 2i] = sin(pos / 10000^(2i / d_model)) and
    PE[pos, 2i + 1] = cos(pos / 10000^(2i / d_model)): each pair of columns
    is a sine and a cosine of one frequency, from 1 down to nearly 1/10000.
    """
    _checks.positive_ints(length=length, d_model=d_model)
    pos = jnp.arange(length, dtype=jnp.float32)[:, None]  # [length, 1]
    two_i = 2 * (jnp.arange(d_model) // 2)  # 0, 0, 2, 2, 4, 4, ...
    angle = pos / jnp.power(10000.0, two_i / d_model)  # [length, d_model]
    even = jnp.arange(d_model) % 2 == 0  # columns 2i get sin, 2i + 1 cos
    return jnp.where(even, jnp.sin(angle), jnp.cos(angle))


def position_wise_ffn(x: jax.Array, W_1: jax.Array, b_1: jax.Array, W_2: jax.Array, b_2: jax.Array) -> jax.Array:
    """FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, the same two layers at every position (§3.3).

    x ``[..., d_model]``, W_1 ``[d_model, d_ff]``, b_1 ``[d_ff]``, W_2 ``[d_ff, d_model]``, b_2 ``[d_model]``.
    """
    return jax.nn.relu(x @ W_1 + b_1) @ W_2 + b_2


def transformer_learning_rate(d_model: int, warmup_steps: int = 4000,
                              scale: float = 1.0) -> optax.Schedule:
    """The schedule of §5.3:
    scale * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5).

    It rises linearly for ``warmup_steps`` steps, then decays as
    1/sqrt(step). Steps count from 1 (optax counts from 0, so the schedule
    is evaluated at count + 1).
    """
    _checks.positive_ints(d_model=d_model, warmup_steps=warmup_steps)
    if not scale > 0:
        raise ValueError(f"scale: expected a positive number, got {scale!r}")

    def schedule(count):
        step = jnp.asarray(count, jnp.float32) + 1.0
        rise, fall = step * warmup_steps ** -1.5, step ** -0.5
        return scale * d_model ** -0.5 * jnp.minimum(rise, fall)

    return schedule


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


class MultiHeadAttention(nnx.Module):
    """h heads of scaled dot-product attention, concatenated and projected by W^O (§3.2.2).

    Parameters are laid out like ``flax.nnx.MultiHeadAttention`` (so weights can be copied across):
    W_q, W_k, W_v ``[d_model, h, d_k]`` with biases ``[h, d_k]``, and W_o ``[h, d_k, d_model]`` with
    bias ``[d_model]``; d_k = d_model / h.

    Call it as ``mha(x_q, x_kv, mask)``: queries from x_q ``[B, T, d_model]``, keys and values from
    x_kv ``[B, S, d_model]`` (x_q itself for self-attention), mask broadcastable to
    ``[B, h, T, S]``. Returns (out ``[B, T, d_model]``, per-head weights ``[B, h, T, S]``).
    """

    def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs):
        _checks.positive_ints(d_model=d_model, num_heads=num_heads)
        if d_model % num_heads:
            raise ValueError(f"num_heads: must divide d_model = {d_model}, got {num_heads}")
        self.d_model, self.num_heads, self.d_k = d_model, num_heads, d_model // num_heads
        init = nnx.initializers.lecun_normal(in_axis=0, out_axis=(1, 2))
        shape = (d_model, num_heads, self.d_k)
        self.W_q = nnx.Param(init(rngs.params(), shape))
        self.W_k = nnx.Param(init(rngs.params(), shape))
        self.W_v = nnx.Param(init(rngs.params(), shape))
        self.b_q = nnx.Param(jnp.zeros((num_heads, self.d_k)))
        self.b_k = nnx.Param(jnp.zeros((num_heads, self.d_k)))
        self.b_v = nnx.Param(jnp.zeros((num_heads, self.d_k)))
        out_init = nnx.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)
        self.W_o = nnx.Param(out_init(rngs.params(), (num_heads, self.d_k, d_model)))
        self.b_o = nnx.Param(jnp.zeros((d_model,)))

    def project(self, x: jax.Array, which: str) -> jax.Array:
        """x W_i^Q + b (which="q"; "k", "v" alike) for every head i at once:
        x ``[B, T, d_model]`` → ``[B, h, T, d_k]``."""
        W, b = {"q": (self.W_q, self.b_q), "k": (self.W_k, self.b_k),
                "v": (self.W_v, self.b_v)}[which]
        return jnp.einsum("btd,dhk->bhtk", x, W[...]) + b[...][:, None, :]

    def combine(self, heads: jax.Array) -> jax.Array:
        """Concat(head_1, ..., head_h) W^O + b: ``[B, h, T, d_k]`` →
        ``[B, T, d_model]`` (the concatenation and the product in one sum)."""
        out = jnp.einsum("bhtk,hkd->btd", heads, self.W_o[...])
        return out + self.b_o[...]

    def __call__(self, x_q: jax.Array, x_kv: jax.Array | None = None,
                 mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        x_kv = x_q if x_kv is None else x_kv
        for name, x in (("x_q", x_q), ("x_kv", x_kv)):
            if jnp.ndim(x) != 3 or jnp.shape(x)[-1] != self.d_model:
                raise ValueError(f"{name}: expected shape [B, T, {self.d_model}], got {_shape(x)}")
        if jnp.shape(x_q)[0] != jnp.shape(x_kv)[0]:
            raise ValueError(f"x_kv: expected batch {jnp.shape(x_q)[0]} like x_q, got shape {_shape(x_kv)}")
        heads, weights = scaled_dot_product_attention(
            self.project(x_q, "q"), self.project(x_kv, "k"), self.project(x_kv, "v"), mask)
        return self.combine(heads), weights


class _FFN(nnx.Module):
    def __init__(self, d_model: int, d_ff: int, *, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal()
        self.W_1 = nnx.Param(init(rngs.params(), (d_model, d_ff)))
        self.b_1 = nnx.Param(jnp.zeros((d_ff,)))
        self.W_2 = nnx.Param(init(rngs.params(), (d_ff, d_model)))
        self.b_2 = nnx.Param(jnp.zeros((d_model,)))

    def __call__(self, x):
        return position_wise_ffn(x, self.W_1[...], self.b_1[...], self.W_2[...], self.b_2[...])


class _Residual(nnx.Module):
    """A sub-layer f with its residual connection and LayerNorm:
    LayerNorm(x + dropout(f(x))) (post-LN, the paper's §3.1 and §5.4), or
    x + dropout(f(LayerNorm(x))) (pre-LN, ``norm_first=True``)."""

    def __init__(self, d_model: int, norm_first: bool, dropout: float, *,
                 rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.norm_first = norm_first

    def __call__(self, x, sublayer):
        if self.norm_first:
            out, extra = sublayer(self.norm(x))
            return x + self.dropout(out), extra  # pre-LN
        out, extra = sublayer(x)
        return self.norm(x + self.dropout(out)), extra  # post-LN


class EncoderLayer(nnx.Module):
    """Self-attention over the source, then the feed-forward network, each a residual sub-layer."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, *, norm_first: bool = False,
                 dropout: float = 0.0, rngs: nnx.Rngs):
        self.attention = MultiHeadAttention(d_model, num_heads, rngs=rngs)
        self.ffn = _FFN(d_model, d_ff, rngs=rngs)
        self.sub1 = _Residual(d_model, norm_first, dropout, rngs=rngs)
        self.sub2 = _Residual(d_model, norm_first, dropout, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x ``[B, S, d]``, mask ``[B, 1, S, S]`` → (x, weights ``[B, h, S, S]``)."""
        x, weights = self.sub1(x, lambda y: self.attention(y, y, mask))
        x, _ = self.sub2(x, lambda y: (self.ffn(y), None))
        return x, weights


class DecoderLayer(nnx.Module):
    """Masked self-attention, attention over the encoder's output, the feed-forward network."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, *, norm_first: bool = False,
                 dropout: float = 0.0, rngs: nnx.Rngs):
        self.self_attention = MultiHeadAttention(d_model, num_heads, rngs=rngs)
        self.cross_attention = MultiHeadAttention(d_model, num_heads, rngs=rngs)
        self.ffn = _FFN(d_model, d_ff, rngs=rngs)
        self.sub1 = _Residual(d_model, norm_first, dropout, rngs=rngs)
        self.sub2 = _Residual(d_model, norm_first, dropout, rngs=rngs)
        self.sub3 = _Residual(d_model, norm_first, dropout, rngs=rngs)

    def cross(self, y: jax.Array, keys: jax.Array, values: jax.Array, source_mask: jax.Array):
        """Attention over the encoder's output with its keys and values already projected (once per sentence)."""
        heads, weights = scaled_dot_product_attention(self.cross_attention.project(y, "q"), keys, values,
                                                      source_mask)
        return self.cross_attention.combine(heads), weights

    def __call__(self, y: jax.Array, self_attend, keys: jax.Array, values: jax.Array,
                 source_mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """y ``[B, T, d]``; ``self_attend(y)`` is the masked self-attention (full or cached).

        Returns (y, self-attention weights, cross-attention weights ``[B, h, T, S]``).
        """
        y, self_weights = self.sub1(y, self_attend)
        y, cross_weights = self.sub2(y, lambda z: self.cross(z, keys, values, source_mask))
        y, _ = self.sub3(y, lambda z: (self.ffn(z), None))
        return y, self_weights, cross_weights


class Transformer(nnx.Module):
    """The encoder–decoder of §3.1, sized for the course's tasks.

    Args:
      source_vocab, target_vocab: |V_x| and |V_y|.
      d_model: the width of every position's vector (embeddings, sub-layer outputs).
      num_heads: h; d_k = d_v = d_model / h.
      d_ff: the inner width of the feed-forward network.
      layers: N, the number of encoder layers and of decoder layers.
      max_length: the longest source or target sequence (EOS included) the model can take: the
        length of its position table and of its decoder's key/value cache.
      norm_first: False for the paper's post-LN sub-layers, True for pre-LN.
      dropout: P_drop of §5.4 (residual dropout); 0 turns it off.

    ``model(source, source_lengths, target_in)`` is the parallel teacher-forced pass and returns
    (logits ``[B, T_y, |V_y|]``, cross-attention ``[B, T_y, T_x]``: the last decoder layer's
    weights, averaged over its heads). :meth:`attention_maps` returns every layer's and head's.
    """

    def __init__(self, source_vocab: int, target_vocab: int, *, d_model: int = 64, num_heads: int = 4,
                 d_ff: int = 256, layers: int = 2, max_length: int = 128, norm_first: bool = False,
                 dropout: float = 0.0, rngs: nnx.Rngs):
        _checks.positive_ints(source_vocab=source_vocab, target_vocab=target_vocab, d_model=d_model,
                              d_ff=d_ff, layers=layers, max_length=max_length)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a rate in [0, 1), got {dropout!r}")
        self.d_model, self.max_length, self.norm_first = d_model, max_length, norm_first
        self.source_embed = nnx.Embed(source_vocab, d_model, rngs=rngs)
        self.target_embed = nnx.Embed(target_vocab, d_model, rngs=rngs)
        self.encoder = _ModuleList([EncoderLayer(d_model, num_heads, d_ff, norm_first=norm_first, dropout=dropout,
                                              rngs=rngs) for _ in range(layers)])
        self.decoder = _ModuleList([DecoderLayer(d_model, num_heads, d_ff, norm_first=norm_first, dropout=dropout,
                                              rngs=rngs) for _ in range(layers)])
        # Pre-LN leaves each stack's output un-normalised: one LayerNorm at the end of each.
        self.encoder_norm = nnx.LayerNorm(d_model, rngs=rngs) if norm_first else None
        self.decoder_norm = nnx.LayerNorm(d_model, rngs=rngs) if norm_first else None
        self.embed_dropout = nnx.Dropout(dropout, rngs=rngs)
        self.readout = nnx.Linear(d_model, target_vocab, rngs=rngs)

    # -- pieces ---------------------------------------------------------------------------------

    def _embed(self, table: nnx.Embed, tokens: jax.Array, positions: jax.Array) -> jax.Array:
        """E x * sqrt(d_model) + PE (§3.4, §3.5); tokens and positions ``[B, T]``."""
        pe = sinusoidal_positions(self.max_length, self.d_model)[positions]  # [B, T, d]
        return self.embed_dropout(table(tokens) * math.sqrt(self.d_model) + pe)

    def _check_length(self, name: str, tokens: jax.Array) -> None:
        if jnp.ndim(tokens) != 2:
            raise ValueError(f"{name}: expected shape [B, T], got {_shape(tokens)}")
        if jnp.shape(tokens)[1] > self.max_length:
            raise ValueError(f"{name}: at most max_length = {self.max_length} positions, got shape {_shape(tokens)}")

    def encode(self, source: jax.Array, source_lengths: jax.Array) -> dict:
        """The encoder's output ``[B, T_x, d]``, the source mask, and each decoder layer's keys and values
        of it ``[B, h, T_x, d_k]`` (projected once per sentence, not once per target word)."""
        self._check_length("source", source)
        B, S = source.shape
        mask = rnn.lengths_to_mask(source_lengths, S)  # [B, S]
        x = self._embed(self.source_embed, source, jnp.broadcast_to(jnp.arange(S), (B, S)))
        attend = mask[:, None, None, :]  # [B, 1, 1, S]: every query may attend to the real words
        encoder_weights = []
        for layer in self.encoder:
            x, weights = layer(x, attend)
            encoder_weights.append(weights)
        if self.encoder_norm is not None:
            x = self.encoder_norm(x)
        keys = [layer.cross_attention.project(x, "k") for layer in self.decoder]
        values = [layer.cross_attention.project(x, "v") for layer in self.decoder]
        return dict(states=x, mask=mask, source_lengths=jnp.asarray(source_lengths, jnp.int32),
                    keys=keys, values=values, encoder_weights=encoder_weights)

    def _readout(self, y: jax.Array) -> jax.Array:
        if self.decoder_norm is not None:
            y = self.decoder_norm(y)
        return self.readout(y)

    # -- the parallel (teacher-forced) pass -----------------------------------------------------

    def attention_maps(self, source: jax.Array, source_lengths: jax.Array, target_in: jax.Array) -> dict:
        """Teacher forcing, keeping everything: logits and every layer's weights.

        Returns a dict with ``logits`` ``[B, T_y, V]``, ``encoder`` (per layer ``[B, h, T_x, T_x]``),
        ``decoder`` (per layer ``[B, h, T_y, T_y]``) and ``cross`` (per layer ``[B, h, T_y, T_x]``).
        """
        self._check_length("target_in", target_in)
        memory = self.encode(source, source_lengths)
        B, T = target_in.shape
        y = self._embed(self.target_embed, target_in, jnp.broadcast_to(jnp.arange(T), (B, T)))
        causal = causal_mask(T)[None, None]  # [1, 1, T, T]
        source_mask = memory["mask"][:, None, None, :]  # [B, 1, 1, S]
        decoder_weights, cross_weights = [], []
        for layer, keys, values in zip(self.decoder, memory["keys"], memory["values"]):
            y, self_w, cross_w = layer(y, lambda z, layer=layer: layer.self_attention(z, z, causal),
                                       keys, values, source_mask)
            decoder_weights.append(self_w)
            cross_weights.append(cross_w)
        return dict(logits=self._readout(y), encoder=memory["encoder_weights"], decoder=decoder_weights,
                    cross=cross_weights)

    def __call__(self, source: jax.Array, source_lengths: jax.Array, target_in: jax.Array):
        maps = self.attention_maps(source, source_lengths, target_in)
        return maps["logits"], maps["cross"][-1].mean(axis=1)

    # -- the decodable interface: one token at a time, with a key/value cache -------------------

    def init_decoder(self, memory: dict) -> dict:
        """The step counter and an empty cache: per decoder layer, keys and values ``[B, h, max_length, d_k]``."""
        B = memory["states"].shape[0]
        layer = self.decoder[0].self_attention
        empty = jnp.zeros((B, layer.num_heads, self.max_length, layer.d_k), memory["states"].dtype)
        return dict(step=jnp.zeros((B,), jnp.int32), keys=[empty for _ in self.decoder],
                    values=[empty for _ in self.decoder])

    def decode_step(self, memory: dict, state: dict, prev: jax.Array):
        """One target position: the next token's logits ``[B, V]`` from the
        previous token ``[B]``, the new state, and the last layer's
        cross-attention averaged over heads ``[B, T_x]``.

        The new position's keys and values are written into the cache at
        index ``step``, and its query attends over cache positions
        0..step: a step costs O(max_length), however long the prefix.
        """
        step = state["step"]  # [B]
        y = self._embed(self.target_embed, prev[:, None], step[:, None])
        L = jnp.arange(self.max_length)[None, :]  # [1, L]
        seen = (L <= step[:, None])[:, None, None, :]  # [B, 1, 1, L]
        write = (L == step[:, None])[:, None, :, None]  # [B, 1, L, 1]
        source_mask = memory["mask"][:, None, None, :]  # [B, 1, 1, T_x]
        new_keys, new_values = [], []
        for i, layer in enumerate(self.decoder):
            cache = {}

            def attend(z, mha=layer.self_attention, i=i, cache=cache):
                # z is the sub-layer's input (y, or LayerNorm(y) for pre-LN);
                # its key and value go into the cache of layer i at `step`
                k = jnp.where(write, mha.project(z, "k"), state["keys"][i])
                v = jnp.where(write, mha.project(z, "v"), state["values"][i])
                cache.update(k=k, v=v)  # [B, h, L, d_k] each
                q = mha.project(z, "q")  # [B, h, 1, d_k]
                heads, weights = scaled_dot_product_attention(q, k, v, seen)
                return mha.combine(heads), weights

            y, _, cross = layer(y, attend, memory["keys"][i],
                                memory["values"][i], source_mask)
            new_keys.append(cache["k"])
            new_values.append(cache["v"])
        logits = self._readout(y)[:, 0]
        state = dict(step=step + 1, keys=new_keys, values=new_values)
        return logits, state, cross[:, :, 0].mean(axis=1)
