"""Chapter 05: Luong, Pham & Manning (2015), where to score, how to score, how far to look.

The path through one decoder step is h_t -> a_t -> c_t -> h~_t: the GRU steps *first*, and its
new state h_t (the *current* top state, not Bahdanau's s_{i-1}) scores the annotations h-bar_s:

    h_t  = GRU(h_{t-1}, [E y_{t-1}; h~_{t-1}])      (input feeding; without it: E y_{t-1} only)
    a_t  = align(h_t, h-bar)                         (global: every s; local: a window around p_t)
    c_t  = sum_s a_t(s) h-bar_s
    h~_t = tanh([c_t; h_t] W_c)                      (the attentional vector)
    p(y_t | y_<t, x) = softmax(h~_t W_s + b_s)

In the course's row-vector convention, with h ``[..., n]`` and h-bar ``[..., S, m]``, the four
scores are

    dot       e_s = h · h-bar_s                       (needs n = m)
    general   e_s = (h W_a) · h-bar_s                 W_a ``[n, m]``
    concat    e_s = v_a · tanh([h; h-bar_s] W_a)       W_a ``[n + m, k]``, v_a ``[k]``
    location  e   = h W_a                             W_a ``[n, S_max]``: one score per *position*

and local attention puts a window of 2D + 1 positions around an aligned position p_t, either
p_t = t (local-m, monotonic) or p_t = S · sigmoid(v_p · tanh(h_t W_p)) (local-p, predicted), in
which case a Gaussian exp(-(s - p_t)^2 / (2 sigma^2)), sigma = D / 2, multiplies the weights.
Positions are 0-based; S counts the real source positions, EOS included.

:class:`LuongEncoderDecoder` is :class:`attention_course.seq2seq.AttentionEncoderDecoder` (the
same BiGRU encoder, the same ``encode``, the same decodable interface and loss) with one method
rewritten, ``decode_step``: that method is the whole difference between chapter 04 and this one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attention_course import _checks, _precision, pooling, seq2seq, soft_search

__all__ = [
    "dot_score", "general_score", "concat_score", "location_score", "predicted_position",
    "window_mask", "local_weights", "attentional_vector",
    "LuongAttention", "LuongEncoderDecoder", "luong", "teacher_force_positions",
    "SCORES", "WINDOWS",
]

SCORES = ("dot", "general", "concat", "location")
WINDOWS = ("global", "local-m", "local-p")


def _shape(x) -> tuple:
    return tuple(jnp.shape(x))


def _check_query_keys(h, hbar, hbar_name: str = "hbar") -> tuple[tuple, tuple]:
    h_shape, k_shape = _shape(h), _shape(hbar)
    if len(h_shape) < 1:
        raise ValueError(f"h: expected shape [..., n], got {h_shape}")
    if len(k_shape) != len(h_shape) + 1 or k_shape[:-2] != h_shape[:-1]:
        raise ValueError(f"{hbar_name}: expected shape [..., S, m] with the leading axes of h "
                         f"{h_shape[:-1]}, got {k_shape}")
    return h_shape, k_shape


def dot_score(h: jax.Array, hbar: jax.Array) -> jax.Array:
    """Luong's dot score: e_s = h · h-bar_s.

    Args:
      h: the decoder's current state h_t, ``[..., n]``.
      hbar: the annotations h-bar_s, ``[..., S, n]`` (the same size as h).

    Returns:
      e ``[..., S]`` (unnormalised; padding not masked here), in float32 at least: each score
      function computes in float32 when its inputs are narrower (:mod:`attention_course._precision`).
    """
    h_shape, k_shape = _check_query_keys(h, hbar)
    if k_shape[-1] != h_shape[-1]:
        raise ValueError(f"hbar: the dot score needs annotations of the size of h (n = {h_shape[-1]}), "
                         f"got hbar {k_shape}")
    (h, hbar), _ = _precision.inside(h, hbar)  # scores in f32 at least
    return jnp.einsum("...n,...sn->...s", h, hbar)


def general_score(h: jax.Array, hbar: jax.Array, W_a: jax.Array) -> jax.Array:
    """Luong's general score: e_s = (h W_a) · h-bar_s, a bilinear form.

    Args:
      h: ``[..., n]``; hbar: ``[..., S, m]``; W_a: ``[n, m]``.

    Returns:
      e ``[..., S]``.
    """
    h_shape, k_shape = _check_query_keys(h, hbar)
    expected = (h_shape[-1], k_shape[-1])
    if _shape(W_a) != expected:
        raise ValueError(f"W_a: expected shape [n, m] = {expected}, "
                         f"got {_shape(W_a)}")
    # scores in f32 at least
    (h, hbar, W_a), _ = _precision.inside(h, hbar, W_a)
    return jnp.einsum("...m,...sm->...s", h @ W_a, hbar)


def concat_score(h: jax.Array, hbar: jax.Array, W_a: jax.Array, v_a: jax.Array) -> jax.Array:
    """Luong's concat score: e_s = v_a · tanh([h; h-bar_s] W_a).

    Splitting W_a into its first n rows (for h) and its last m rows (for h-bar_s) shows that this is
    Bahdanau's additive score (:func:`attention_course.soft_search.additive_score`) with the current
    state h_t in place of s_{i-1}.

    Args:
      h: ``[..., n]``; hbar: ``[..., S, m]``; W_a: ``[n + m, k]``; v_a: ``[k]``.

    Returns:
      e ``[..., S]``.
    """
    h_shape, k_shape = _check_query_keys(h, hbar)
    n, m = h_shape[-1], k_shape[-1]
    if len(_shape(v_a)) != 1:
        raise ValueError(f"v_a: expected shape [k], got {_shape(v_a)}")
    if _shape(W_a) != (n + m, _shape(v_a)[0]):
        raise ValueError(f"W_a: expected shape [n + m, k] = {(n + m, _shape(v_a)[0])}, got {_shape(W_a)}")
    # scores in f32 at least
    (h, hbar, W_a, v_a), _ = _precision.inside(h, hbar, W_a, v_a)
    return soft_search.additive_score_projected(h, hbar @ W_a[n:], W_a[:n], v_a)


def location_score(h: jax.Array, W_a: jax.Array) -> jax.Array:
    """Luong's location score: e = h W_a, one score per source *position*, whatever word is there.

    Args:
      h: ``[..., n]``; W_a: ``[n, S_max]``, S_max the longest source the model can read.

    Returns:
      e ``[..., S_max]``; a source of S < S_max positions uses the first S (mask the rest).
    """
    h_shape = _shape(h)
    if len(h_shape) < 1:
        raise ValueError(f"h: expected shape [..., n], got {h_shape}")
    if len(_shape(W_a)) != 2 or _shape(W_a)[0] != h_shape[-1]:
        raise ValueError(f"W_a: expected shape [n, S_max] with n = {h_shape[-1]}, got {_shape(W_a)}")
    (h, W_a), _ = _precision.inside(h, W_a)  # scores in f32 at least
    return h @ W_a


def predicted_position(h: jax.Array, W_p: jax.Array, v_p: jax.Array,
                       source_lengths: jax.Array) -> jax.Array:
    """Local-p's aligned position: p = S · sigmoid(v_p · tanh(h W_p)) in [0, S].

    Args:
      h: ``[..., n]``; W_p: ``[n, k]``; v_p: ``[k]``.
      source_lengths: S ``[...]`` int, the real source positions (EOS too).

    Returns:
      p ``[...]`` float.
    """
    h_shape = _shape(h)
    if len(h_shape) < 1:
        raise ValueError(f"h: expected shape [..., n], got {h_shape}")
    if len(_shape(v_p)) != 1:
        raise ValueError(f"v_p: expected shape [k], got {_shape(v_p)}")
    expected = (h_shape[-1], _shape(v_p)[0])
    if _shape(W_p) != expected:
        raise ValueError(f"W_p: expected shape [n, k] = {expected}, "
                         f"got {_shape(W_p)}")
    if _shape(source_lengths) != h_shape[:-1]:
        raise ValueError(f"source_lengths: expected shape {h_shape[:-1]} (the "
                         f"leading axes of h), got {_shape(source_lengths)}")
    S = jnp.asarray(source_lengths, jnp.float32)
    return S * jax.nn.sigmoid(jnp.tanh(h @ W_p) @ v_p)


def _check_window(scores, mask, center, D) -> None:
    s_shape = _shape(scores)
    if len(s_shape) < 1:
        raise ValueError(f"scores: expected shape [..., S], got {s_shape}")
    if _shape(mask) != s_shape:
        raise ValueError(f"mask: expected the shape of scores {s_shape}, got {_shape(mask)}")
    if jnp.result_type(mask) != jnp.bool_:
        raise ValueError(f"mask: expected a boolean array (True = real position), got {jnp.result_type(mask)}")
    if _shape(center) != s_shape[:-1]:
        raise ValueError(f"center: expected shape {s_shape[:-1]} (scores without the last axis), got {_shape(center)}")
    if isinstance(D, bool) or not isinstance(D, int) or D < 1:
        raise ValueError(f"D: expected a positive int (the window's half-width), got {D!r}")


def window_mask(mask: jax.Array, center: jax.Array, D: int) -> jax.Array:
    """The positions s a local window may read: real (``mask``) and with |s - center| <= D.

    Args:
      mask: ``[..., S]`` bool, True on real source positions; center: ``[...]`` float; D: int >= 1.

    Returns:
      ``[..., S]`` bool.
    """
    _check_window(jnp.zeros(_shape(mask)), mask, center, D)
    s = jnp.arange(_shape(mask)[-1], dtype=jnp.float32)
    return mask & (jnp.abs(s - jnp.asarray(center, jnp.float32)[..., None]) <= D)


def local_weights(scores: jax.Array, mask: jax.Array, center: jax.Array,
                  D: int, *, gaussian: bool) -> jax.Array:
    """Local attention: a softmax over the window |s - center| <= D.

    Only real positions (``mask``) inside the window get weight; 0 elsewhere.
    With ``gaussian=True`` (local-p) the softmax is then multiplied by
    exp(-(s - center)^2 / (2 sigma^2)), sigma = D / 2, and not renormalised,
    as in the paper; the gradient reaches ``center`` through the Gaussian.
    A window without any real position gives zeros, never NaN.

    Args:
      scores: e ``[..., S]``; mask: ``[..., S]`` bool;
      center: p_t ``[...]`` float; D: int >= 1.

    Returns:
      a_t ``[..., S]``.
    """
    _check_window(scores, mask, center, D)
    center = jnp.asarray(center, jnp.float32)
    inside = window_mask(mask, center, D)
    weights = pooling.masked_softmax(scores, inside)
    if gaussian:
        s = jnp.arange(_shape(scores)[-1], dtype=jnp.float32)
        sigma = D / 2
        distance = s - center[..., None]
        weights = weights * jnp.exp(-(distance**2) / (2 * sigma**2))
    return weights


def attentional_vector(c: jax.Array, h: jax.Array, W_c: jax.Array) -> jax.Array:
    """Luong's attentional hidden state: h~ = tanh([c; h] W_c).

    Args:
      c: the context ``[..., m]``; h: the decoder state ``[..., n]``; W_c: ``[m + n, n]``.

    Returns:
      h~ ``[..., n]``.
    """
    c_shape, h_shape = _shape(c), _shape(h)
    if len(c_shape) < 1 or c_shape[:-1] != h_shape[:-1] or len(h_shape) < 1:
        raise ValueError(f"c: expected shape [..., m] with the leading axes of h {h_shape[:-1]}, got {c_shape}")
    if _shape(W_c) != (c_shape[-1] + h_shape[-1], h_shape[-1]):
        raise ValueError(f"W_c: expected shape [m + n, n] = {(c_shape[-1] + h_shape[-1], h_shape[-1])}, "
                         f"got {_shape(W_c)}")
    return jnp.tanh(jnp.concatenate([c, h], axis=-1) @ W_c)


class LuongAttention(nnx.Module):
    """One of Luong's attentions: a score (dot, general, concat, location) and a reach (global,
    local-m, local-p).

    The same interface as the alignments of :mod:`attention_course.seq2seq` (``prepare`` once per
    sentence, then one call per target position), except that it is called with the *current*
    decoder state h_t and returns the aligned position too.

    Args:
      n: decoder state size; m: annotation size.
      score: one of :data:`SCORES`; window: one of :data:`WINDOWS`.
      D: the local window's half-width (the window holds 2D + 1 positions).
      k: the hidden size of the concat score and of local-p's position network.
      max_source: S_max, the longest source (EOS included) the location score can read.
    """

    def __init__(self, n: int, m: int, *, score: str = "general", window: str = "global", D: int = 10,
                 k: int | None = None, max_source: int | None = None, rngs: nnx.Rngs):
        _checks.positive_int("n", n), _checks.positive_int("m", m), _checks.positive_int("D", D)
        if score not in SCORES:
            raise ValueError(f"score: expected one of {SCORES}, got {score!r}")
        if window not in WINDOWS:
            raise ValueError(f"window: expected one of {WINDOWS}, got {window!r}")
        if score == "dot" and n != m:
            raise ValueError(f"score: 'dot' needs n == m, got n = {n}, m = {m}")
        if score == "location":
            max_source = _checks.positive_int("max_source", max_source)
        k = _checks.positive_int("k", k if k is not None else n)
        self.score, self.window, self.D, self.n, self.m = score, window, D, n, m
        self.max_source = max_source
        init = nnx.initializers.lecun_normal()
        if score == "general":
            self.W_a = nnx.Param(init(rngs.params(), (n, m)))
        elif score == "concat":
            self.W_a = nnx.Param(init(rngs.params(), (n + m, k)))
            self.v_a = nnx.Param(init(rngs.params(), (k, 1))[:, 0])
        elif score == "location":
            self.W_a = nnx.Param(init(rngs.params(), (n, max_source)))
        if window == "local-p":
            self.W_p = nnx.Param(init(rngs.params(), (n, k)))
            self.v_p = nnx.Param(init(rngs.params(), (k, 1))[:, 0])

    def prepare(self, memory: dict) -> dict:
        """What does not depend on t: for concat, h-bar_s W_a[n:] ``[B, S, k]``."""
        S = memory["h"].shape[1]
        if self.score == "location" and S > self.max_source:
            raise ValueError(f"source: the location score reads at most max_source = {self.max_source} "
                             f"positions, got a padded source of {S}")
        if self.score == "concat":
            return dict(memory, hW=memory["h"] @ self.W_a[...][self.n:])
        return memory

    def scores(self, h: jax.Array, memory: dict) -> jax.Array:
        """e ``[B, S]`` from the current state h_t ``[B, n]``."""
        hbar = memory["h"]
        if self.score == "dot":
            return dot_score(h, hbar)
        if self.score == "general":
            return general_score(h, hbar, self.W_a[...])
        if self.score == "concat":
            W_a = self.W_a[...]
            return soft_search.additive_score_projected(h, memory["hW"], W_a[: self.n], self.v_a[...])
        return location_score(h, self.W_a[...])[:, : hbar.shape[1]]

    def __call__(self, h: jax.Array, step: jax.Array, memory: dict) -> tuple[jax.Array, jax.Array]:
        """(a_t ``[B, S]``, p_t ``[B]``) for target position ``step`` ``[B]`` (0-based).

        Global attention reports p_t = 0 (it has no aligned position)."""
        e = self.scores(h, memory)
        if self.window == "global":
            return pooling.masked_softmax(e, memory["mask"]), jnp.zeros(h.shape[:1])
        if self.window == "local-m":
            p = step.astype(jnp.float32)
        else:
            p = predicted_position(h, self.W_p[...], self.v_p[...], memory["source_lengths"])
        return local_weights(e, memory["mask"], p, self.D, gaussian=self.window == "local-p"), p


class LuongEncoderDecoder(seq2seq.AttentionEncoderDecoder):
    """Chapter 04's encoder–decoder with Luong's decoder step.

    Inherited unchanged: the BiGRU encoder and ``encode`` (annotations h-bar ``[B, S, m]``, m = 2H,
    the mask, the lengths and the initial state h_0 = tanh(h-bar_1(backward) W_0 + b_0)), the
    teacher-forcing ``__call__`` and :func:`attention_course.seq2seq.loss`. What changes:

    * the decoder state has n = m numbers, so that the dot score is defined;
    * ``decode_step`` (the order of the path, the attentional vector, input feeding, the readout);
    * ``init_decoder`` adds h~_0 = 0.

    Args:
      source_vocab, target_vocab: |V_x| and |V_y|.
      attention: a :class:`LuongAttention` with n = m = 2 * hidden.
      embed: d_e; hidden: H, the size of each encoder direction.
      input_feeding: feed h~_{t-1} into the GRU at step t.
    """

    def __init__(self, source_vocab: int, target_vocab: int, attention: LuongAttention, *, embed: int = 32,
                 hidden: int = 32, input_feeding: bool = True, rngs: nnx.Rngs):
        for name, value in (("source_vocab", source_vocab), ("target_vocab", target_vocab),
                            ("embed", embed), ("hidden", hidden)):
            _checks.positive_int(name, value)
        m = n = 2 * hidden
        if not isinstance(attention, LuongAttention) or (attention.n, attention.m) != (n, m):
            raise ValueError(f"attention: expected a LuongAttention with n = m = 2 * hidden = {m}, got "
                             f"{type(attention).__name__}{(getattr(attention, 'n', None), getattr(attention, 'm', None))}")
        from attention_course import rnn

        self.hidden, self.n, self.input_feeding = hidden, n, bool(input_feeding)
        self.encoder = rnn.GRUEncoder(source_vocab, embed, hidden, bidirectional=True, rngs=rngs)
        self.alignment = attention
        self.target_embed = nnx.Embed(target_vocab, embed, rngs=rngs)
        self.init_proj = nnx.Linear(hidden, n, rngs=rngs)  # W_0: from the first backward state
        self.decoder = rnn.GRU(embed + (n if input_feeding else 0), n, rngs=rngs)
        self.W_c = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (m + n, n)))
        self.readout = nnx.Linear(n, target_vocab, rngs=rngs)  # W_s, b_s

    def init_decoder(self, memory: dict) -> dict:
        """State: h_0, h~_0 = 0, the target position t = 0 and the last aligned position."""
        s0 = memory["s0"]
        B = s0.shape[0]
        return dict(s=s0, htilde=jnp.zeros_like(s0), step=jnp.zeros((B,), jnp.int32), p=jnp.zeros((B,)))

    def decode_step(self, memory: dict, state: dict, prev: jax.Array):
        """One step: h_{t-1} -> h_t -> a_t -> c_t -> h~_t -> logits.

        h_t = GRU(h_{t-1}, [E y_{t-1}; h~_{t-1}]) (without input feeding:
        E y_{t-1} only); a_t from h_t; h~_t = tanh([c_t; h_t] W_c).
        """
        y = self.target_embed(prev)  # [B, d_e]
        if self.input_feeding:  # the last attentional vector joins the input
            x = jnp.concatenate([y, state["htilde"]], axis=-1)
        else:
            x = y
        h = self.decoder(state["s"], x)  # [B, n]: the current state scores
        a, p = self.alignment(h, state["step"], memory)  # [B, S], [B]
        c = pooling.weighted_average(a, memory["h"])  # [B, m]
        htilde = attentional_vector(c, h, self.W_c[...])  # [B, n]
        logits = self.readout(htilde)
        return logits, dict(s=h, htilde=htilde, step=state["step"] + 1, p=p), a


def luong(source_vocab: int, target_vocab: int, *, score: str = "general", window: str = "global",
          input_feeding: bool = True, D: int = 10, embed: int = 32, hidden: int = 32, k: int | None = None,
          max_source: int | None = None, rngs: nnx.Rngs) -> LuongEncoderDecoder:
    """A Luong model: BiGRU encoder (H per direction), decoder of n = 2H, the given attention."""
    _checks.positive_int("hidden", hidden)
    attention = LuongAttention(2 * hidden, 2 * hidden, score=score, window=window, D=D, k=k,
                               max_source=max_source, rngs=rngs)
    return LuongEncoderDecoder(source_vocab, target_vocab, attention, embed=embed, hidden=hidden,
                               input_feeding=input_feeding, rngs=rngs)


def teacher_force_positions(model: LuongEncoderDecoder, source, source_lengths, target_in):
    """Teacher forcing that also returns the aligned positions: (logits, a ``[B, T_y, S]``, p ``[B, T_y]``)."""
    memory = model.encode(source, source_lengths)

    def step(state, y_prev):
        logits, state, a = model.decode_step(memory, state, y_prev)
        return state, (logits, a, state["p"])

    _, (logits, a, p) = jax.lax.scan(step, model.init_decoder(memory), jnp.swapaxes(jnp.asarray(target_in), 0, 1))
    return jnp.swapaxes(logits, 0, 1), jnp.swapaxes(a, 0, 1), jnp.swapaxes(p, 0, 1)
