"""Greedy decoding and beam search, jit-compiled, for any encoder–decoder of the course.

A model is decodable if it has three methods (the chapters' models all do):

* ``encode(source, source_lengths) -> memory``: any pytree of arrays with batch axis first;
* ``init_decoder(memory) -> state``: the decoder's initial state, a pytree with batch axis first;
* ``decode_step(memory, state, prev_token) -> (logits [B, V], state, attention)``: one step, where
  ``attention`` is the ``[B, T_x]`` weights alpha_i over the source, or None for a model without
  attention (the fixed-vector encoder–decoder of chapter 01).

Both decoders stop once every sequence has produced EOS (``lax.while_loop``) or after
``max_length`` tokens; positions after a sequence's EOS hold PAD. They never emit PAD or BOS.
Each compiles once per (model structure, batch shape, max_length, beam size).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attention_course import _checks

__all__ = ["DecodeResult", "teacher_force", "greedy_decode", "beam_search", "translate", "Translation",
           "PAD_ID", "BOS_ID", "EOS_ID"]

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2  # the same ids as attention_course.tasks


class DecodeResult(NamedTuple):
    """tokens ``[B, L]`` (EOS included, PAD after); lengths ``[B]`` (tokens up to and including EOS,
    or L if none); log_prob ``[B]`` (sum of the chosen tokens' log-probabilities; for beam search
    the raw score of the returned hypothesis); attention ``[B, L, T_x]`` or None."""

    tokens: jax.Array
    lengths: jax.Array
    log_prob: jax.Array
    attention: jax.Array | None


def teacher_force(model, source, source_lengths, target_in, *, memory: dict | None = None):
    """Run the decoder over the gold previous words (teacher forcing): one ``lax.scan`` of ``decode_step``.

    Args:
      model: a decodable model (see the module docstring).
      source: ``[B, T_x]`` token ids; source_lengths: ``[B]``.
      target_in: ``[B, T_y]`` the decoder's inputs, BOS y_1 .. y_{n} (``tasks.Batch.target_in``).
      memory: what ``model.encode(source, source_lengths)`` returns, if already computed, for
        instance edited to run an experiment on the encoder's output (``source`` is then only
        used for its batch size).

    Returns:
      (logits ``[B, T_y, V]``, attention ``[B, T_y, T_x]`` or None for a model without attention).
    """
    if jnp.ndim(target_in) != 2 or jnp.shape(target_in)[0] != jnp.shape(source)[0]:
        raise ValueError(f"target_in: expected shape [{jnp.shape(source)[0]}, T_y], got {tuple(jnp.shape(target_in))}")
    if memory is None:
        memory = model.encode(source, source_lengths)

    # The backward pass keeps each step's matrix products and recomputes the
    # rest (the attention's [B, T_x, k] scores above all) instead of storing
    # it for every target position: faster on XLA:CPU (issue 16).
    @partial(jax.checkpoint, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    def step(state, y_prev):
        logits, state, attention = model.decode_step(memory, state, y_prev)
        return state, (logits, attention)

    _, (logits, attention) = jax.lax.scan(step, model.init_decoder(memory), jnp.swapaxes(target_in, 0, 1))
    logits = jnp.swapaxes(logits, 0, 1)
    return logits, (None if attention is None else jnp.swapaxes(attention, 0, 1))


def _check_model(model) -> None:
    missing = [name for name in ("encode", "init_decoder", "decode_step") if not callable(getattr(model, name, None))]
    if missing:
        raise ValueError(f"model: a decodable model needs methods encode, init_decoder, decode_step; "
                         f"{type(model).__name__} lacks {', '.join(missing)}")


def _check_inputs(source, source_lengths, max_length: int) -> None:
    if jnp.ndim(source) != 2:
        raise ValueError(f"source: expected shape [B, T_x], got {tuple(jnp.shape(source))}")
    B, T = jnp.shape(source)
    if tuple(jnp.shape(source_lengths)) != (B,):
        raise ValueError(f"source_lengths: expected shape ({B},), got {tuple(jnp.shape(source_lengths))}")
    lo, hi = int(jnp.min(source_lengths)), int(jnp.max(source_lengths))
    if lo < 1 or hi > T:
        raise ValueError(f"source_lengths: every length must be in [1, {T}], got min {lo}, max {hi}")
    _checks.positive_int("max_length", max_length)


def _check_capacity(model, max_length: int) -> None:
    """A model with a fixed capacity (the Transformer's position table and key/value cache) cannot
    decode past it: refuse instead of dropping keys and clamping positions."""
    capacity = getattr(model, "max_length", None)
    if isinstance(capacity, int) and max_length > capacity:
        raise ValueError(f"max_length: {max_length} tokens to decode, but {type(model).__name__}'s "
                         f"max_length is {capacity} (its position table and cache end there)")


def _for_inference(graphdef, model_state):
    """The model rebuilt inside the compiled search, in evaluation mode: dropout off (its
    ``deterministic`` set), whatever mode the caller's model is in, which stays as it was."""
    model = nnx.merge(graphdef, model_state)
    model.eval()
    return model


def _forbid(logits: jax.Array) -> jax.Array:
    """A decoder never emits PAD or BOS."""
    return logits.at[:, PAD_ID].set(-jnp.inf).at[:, BOS_ID].set(-jnp.inf)


def _probe_step(model, memory, state, prev):
    """Shapes of one step's outputs, without running it: tells whether the model returns attention."""
    return jax.eval_shape(lambda m, s, p: model.decode_step(m, s, p), memory, state, prev)


@partial(jax.jit, static_argnums=(0, 4))
def _greedy(graphdef, model_state, source, source_lengths, max_length: int):
    model = _for_inference(graphdef, model_state)
    B = source.shape[0]
    memory = model.encode(source, source_lengths)
    state = model.init_decoder(memory)
    prev = jnp.full((B,), BOS_ID, jnp.int32)
    probe = _probe_step(model, memory, state, prev)
    has_attention = probe[2] is not None
    T_x = probe[2].shape[-1] if has_attention else 0
    carry = dict(
        i=jnp.int32(0),
        tokens=jnp.full((B, max_length), PAD_ID, jnp.int32),
        attention=jnp.zeros((B, max_length, T_x)),
        log_prob=jnp.zeros((B,)),
        done=jnp.zeros((B,), bool),
        prev=prev,
        state=state,
    )

    def cond(c):
        return (c["i"] < max_length) & ~jnp.all(c["done"])

    def body(c):
        logits, state, attention = model.decode_step(memory, c["state"], c["prev"])
        logp = jax.nn.log_softmax(_forbid(logits), axis=-1)  # [B, V]
        token = jnp.argmax(logp, axis=-1).astype(jnp.int32)  # [B]
        chosen = jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]
        token = jnp.where(c["done"], PAD_ID, token)
        out = dict(c)
        out["tokens"] = c["tokens"].at[:, c["i"]].set(token)
        out["log_prob"] = c["log_prob"] + jnp.where(c["done"], 0.0, chosen)
        if has_attention:
            out["attention"] = c["attention"].at[:, c["i"]].set(jnp.where(c["done"][:, None], 0.0, attention))
        out["done"] = c["done"] | (token == EOS_ID)
        out["prev"] = token
        out["state"] = state
        out["i"] = c["i"] + 1
        return out

    c = jax.lax.while_loop(cond, body, carry)
    lengths = _lengths(c["tokens"])
    return c["tokens"], lengths, c["log_prob"], (c["attention"] if has_attention else None)


def _lengths(tokens: jax.Array) -> jax.Array:
    """Number of tokens up to and including the first EOS (the full width if there is none)."""
    L = tokens.shape[-1]
    is_eos = tokens == EOS_ID
    first = jnp.argmax(is_eos, axis=-1)
    return jnp.where(jnp.any(is_eos, axis=-1), first + 1, L).astype(jnp.int32)


def greedy_decode(model, source, source_lengths, *, max_length: int) -> DecodeResult:
    """Pick the most probable token at each step until EOS or ``max_length``.

    Args:
      model: a decodable model (see the module docstring).
      source: ``[B, T_x]`` int token ids (EOS-terminated, PAD-padded, as in ``tasks.Batch.source``).
      source_lengths: ``[B]`` true lengths in [1, T_x].
      max_length: the most tokens to produce per sentence (EOS included).
    """
    _check_model(model)
    _check_inputs(source, source_lengths, max_length)
    _check_capacity(model, max_length)
    graphdef, state = nnx.split(model)
    tokens, lengths, log_prob, attention = _greedy(graphdef, state, jnp.asarray(source, jnp.int32),
                                                   jnp.asarray(source_lengths, jnp.int32), max_length)
    return DecodeResult(tokens, lengths, log_prob, attention)


def _repeat(tree: Any, k: int) -> Any:
    """Repeat every leaf k times along the batch axis: [B, ...] -> [B*k, ...] (beam b*k + j)."""
    return jax.tree_util.tree_map(lambda x: jnp.repeat(x, k, axis=0), tree)


def _gather_beams(tree: Any, index: jax.Array, B: int, K: int) -> Any:
    """Reorder beams: leaf [B*K, ...] -> leaf[b, index[b, j]] for each (b, j), back to [B*K, ...]."""
    def gather(x):
        x = x.reshape((B, K) + x.shape[1:])
        x = jnp.take_along_axis(x, index.reshape((B, K) + (1,) * (x.ndim - 2)), axis=1)
        return x.reshape((B * K,) + x.shape[2:])

    return jax.tree_util.tree_map(gather, tree)


def length_penalty(lengths: jax.Array, alpha: float) -> jax.Array:
    """Wu et al. (2016)'s length penalty ((5 + |Y|) / 6) ** alpha; alpha = 0 ranks by raw log-probability."""
    return ((5.0 + lengths) / 6.0) ** alpha


@partial(jax.jit, static_argnums=(0, 4, 5))
def _beam(graphdef, model_state, source, source_lengths, max_length: int, K: int, alpha):
    model = _for_inference(graphdef, model_state)
    B = source.shape[0]
    memory = _repeat(model.encode(source, source_lengths), K)
    state = model.init_decoder(memory)
    prev = jnp.full((B * K,), BOS_ID, jnp.int32)
    probe = _probe_step(model, memory, state, prev)
    has_attention = probe[2] is not None
    T_x = probe[2].shape[-1] if has_attention else 0
    V = probe[0].shape[-1]
    # Only beam 0 is alive at the start, so the first step does not pick K copies of one token.
    scores = jnp.tile(jnp.where(jnp.arange(K) == 0, 0.0, -jnp.inf)[None, :], (B, 1))  # [B, K]
    carry = dict(
        i=jnp.int32(0),
        tokens=jnp.full((B, K, max_length), PAD_ID, jnp.int32),
        attention=jnp.zeros((B, K, max_length, T_x)),
        scores=scores,
        done=jnp.zeros((B, K), bool),
        prev=prev,
        state=state,
    )
    # A finished beam may only continue with PAD, at no cost, so it keeps its score unchanged.
    finished_row = jnp.full((V,), -jnp.inf).at[PAD_ID].set(0.0)

    def cond(c):
        return (c["i"] < max_length) & ~jnp.all(c["done"])

    def body(c):
        logits, state, attention = model.decode_step(memory, c["state"], c["prev"])
        logp = jax.nn.log_softmax(_forbid(logits), axis=-1).reshape(B, K, V)
        logp = jnp.where(c["done"][:, :, None], finished_row, logp)
        candidates = (c["scores"][:, :, None] + logp).reshape(B, K * V)
        scores, flat = jax.lax.top_k(candidates, K)  # [B, K]
        beam, token = flat // V, (flat % V).astype(jnp.int32)  # which parent beam, which token
        gather = partial(_gather_beams, index=beam, B=B, K=K)
        take = lambda x: jnp.take_along_axis(x, beam.reshape((B, K) + (1,) * (x.ndim - 2)), axis=1)
        out = dict(c)
        out["tokens"] = take(c["tokens"]).at[:, :, c["i"]].set(token)
        if has_attention:
            att = take(attention.reshape(B, K, T_x)[:, :, None, :])[:, :, 0]  # the parent's weights
            att = jnp.where(take(c["done"][:, :, None])[..., 0:1], 0.0, att)
            out["attention"] = take(c["attention"]).at[:, :, c["i"]].set(att)
        out["done"] = take(c["done"][:, :, None])[..., 0] | (token == EOS_ID)
        out["scores"] = scores
        out["state"] = gather(state)
        out["prev"] = token.reshape(B * K)
        out["i"] = c["i"] + 1
        return out

    c = jax.lax.while_loop(cond, body, carry)
    lengths = _lengths(c["tokens"])  # [B, K]
    ranked = c["scores"] / length_penalty(lengths.astype(jnp.float32), alpha)
    best = jnp.argmax(ranked, axis=-1)  # [B]
    pick = lambda x: jnp.take_along_axis(x, best.reshape((B, 1) + (1,) * (x.ndim - 2)), axis=1)[:, 0]
    attention = pick(c["attention"]) if has_attention else None
    return pick(c["tokens"]), pick(lengths), pick(c["scores"]), attention, c["tokens"], c["scores"]


def beam_search(model, source, source_lengths, *, beam_size: int, max_length: int, alpha: float = 0.0,
                return_beams: bool = False):
    """Keep the ``beam_size`` best partial translations at each step; return the best finished one.

    Hypotheses are ranked by their summed log-probability during the search; the final choice
    divides by :func:`length_penalty` (``alpha = 0`` means no normalisation). With ``beam_size=1``
    this is exactly :func:`greedy_decode`; with a beam as wide as the whole search space it is
    exhaustive search.

    Returns:
      :class:`DecodeResult` for the best hypothesis of each sentence; with ``return_beams=True``,
      also ``(tokens [B, K, L], scores [B, K])`` for all final beams.
    """
    _check_model(model)
    _check_inputs(source, source_lengths, max_length)
    _check_capacity(model, max_length)
    _checks.positive_int("beam_size", beam_size)
    if alpha < 0:
        raise ValueError(f"alpha: expected a non-negative length-penalty exponent, got {alpha}")
    graphdef, state = nnx.split(model)
    tokens, lengths, scores, attention, beams, beam_scores = _beam(
        graphdef, state, jnp.asarray(source, jnp.int32), jnp.asarray(source_lengths, jnp.int32),
        max_length, beam_size, float(alpha))
    result = DecodeResult(tokens, lengths, scores, attention)
    return (result, (beams, beam_scores)) if return_beams else result


class Translation(NamedTuple):
    """A decoded test set, in the order of the input pairs.

    hypotheses, references: word lists (EOS and padding removed).
    source_lengths: ``[N]`` number of source words (EOS not counted), for metrics by length.
    attention: per sentence a ``[len(hypothesis) + 1, len(source) + 1]`` matrix (EOS rows and
      columns included), or None for a model without attention.
    """

    hypotheses: list
    references: list
    source_lengths: np.ndarray
    attention: list | None


def translate(model, pairs, task, *, batch_size: int = 100, beam_size: int = 1, edges=None) -> Translation:
    """Decode every pair of ``pairs`` (greedy, or beam search when ``beam_size > 1``).

    Batches come from :func:`attention_course.tasks.eval_batches` (bucketed by length, so each
    bucket shape compiles once); results are put back in the order of ``pairs``. The output length
    is capped at twice the padded source width.
    """
    from attention_course import tasks  # the decoders themselves do not depend on the tasks

    task = tasks.get_task(task) if isinstance(task, str) else task
    _checks.positive_int("beam_size", beam_size)
    order = tasks.eval_order(pairs, edges=edges)
    hyps, atts = [], []
    for batch, real in tasks.eval_batches(pairs, task, batch_size, edges=edges):
        max_length = 2 * batch.source.shape[1]
        if beam_size == 1:
            result = greedy_decode(model, batch.source, batch.source_lengths, max_length=max_length)
        else:
            result = beam_search(model, batch.source, batch.source_lengths, beam_size=beam_size,
                                 max_length=max_length)
        tokens = np.asarray(result.tokens)
        lengths = np.asarray(result.lengths)
        attention = None if result.attention is None else np.asarray(result.attention)
        for k in np.flatnonzero(real):
            hyps.append(task.target_vocab.decode(tokens[k]))
            if attention is not None:
                atts.append(attention[k, : lengths[k], : int(batch.source_lengths[k])])
    hypotheses, attention = [None] * len(pairs), [None] * len(pairs)
    for row, index in enumerate(order):
        hypotheses[index] = hyps[row]
        if atts:
            attention[index] = atts[row]
    return Translation(
        hypotheses=hypotheses,
        references=[list(p.target) for p in pairs],
        source_lengths=np.array([len(p.source) for p in pairs]),
        attention=attention if atts else None,
    )
