"""Tests of chapter 02's transducer: the loss against things it was not written from.

References: an enumeration of every path (rnnt_loss_brute_force, which walks each path move by
move, no recursion), a closed form for uniform logits, finite differences of the brute force,
Graves's alpha-beta formula for the gradient, the nested-loop recursion, and optax's CTC loss in
the one case where the two models coincide.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.test_util import check_grads

from attention_course import tasks, train, transducer as tr


def random_case(seed, B=4, T=5, U=4, V=6, scale=2.0, full_lengths=False):
    """Logits, labels and mixed lengths (a zero-label example and a one-frame example among them)."""
    rng = np.random.default_rng(seed)
    logits = jnp.asarray(scale * rng.normal(size=(B, T, U + 1, V)), jnp.float32)
    labels = rng.integers(1, V, size=(B, U))
    if full_lengths:
        t_len, u_len = np.full(B, T), np.full(B, U)
    else:
        t_len, u_len = rng.integers(1, T + 1, size=B), rng.integers(0, U + 1, size=B)
        t_len[0], u_len[0] = T, U
        u_len[-1] = 0
        if B > 2:
            t_len[1] = 1
    labels = np.where(np.arange(U)[None] < u_len[:, None], labels, 0)  # PAD after the labels
    return logits, jnp.asarray(labels), jnp.asarray(t_len), jnp.asarray(u_len)


# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_loss_equals_the_sum_over_every_enumerated_path(seed):
    case = random_case(seed)
    got = np.asarray(tr.rnnt_loss(*case))
    expected = tr.rnnt_loss_brute_force(*case)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_blank_can_be_any_id():
    logits, labels, t_len, u_len = random_case(7)
    labels = jnp.where(labels == 3, 1, labels)  # label ids must differ from the blank
    got = tr.rnnt_loss(logits, labels, t_len, u_len, blank=3)
    np.testing.assert_allclose(got, tr.rnnt_loss_brute_force(logits, labels, t_len, u_len, blank=3), atol=1e-5)
    assert not np.allclose(got, tr.rnnt_loss(logits, labels, t_len, u_len, blank=0))


@pytest.mark.parametrize("T, U", [(1, 0), (1, 3), (4, 0), (6, 2), (1000, 200)])
def test_uniform_logits_closed_form(T, U):
    """All logits equal: every move has probability 1/V and Pr(y|x) = C(T+U-1, U) / V^(T+U)."""
    V = 5
    logits = jnp.zeros((1, T, U + 1, V))
    labels = jnp.full((1, U), 2, jnp.int32)
    expected = -(math.log(math.comb(T + U - 1, U)) - (T + U) * math.log(V))
    # float32 log-space sums over T + U = 1200 diagonals round at each step: 1e-5 of 1394 is 0.014
    np.testing.assert_allclose(tr.rnnt_loss(logits, labels, jnp.array([T]), jnp.array([U])), [expected],
                               rtol=2e-5)


def test_long_lattice_gives_finite_loss_and_gradients():
    """T = 1000 frames, U = 200 labels, confident wrong logits: no overflow, no NaN."""
    logits, labels, _, _ = random_case(9, B=2, T=1000, U=200, V=5, scale=8.0, full_lengths=True)
    t_len, u_len = jnp.array([1000, 613]), jnp.array([200, 141])
    value, grad = jax.value_and_grad(lambda z: tr.rnnt_loss(z, labels, t_len, u_len).sum())(logits)
    assert np.isfinite(value) and np.all(np.isfinite(np.asarray(grad)))
    assert value > 0
    # padding frames and labels of the shorter example get exactly zero gradient
    assert np.all(np.asarray(grad)[1, 613:] == 0) and np.all(np.asarray(grad)[1, :, 142:] == 0)


def test_zero_labels_is_the_all_blank_path():
    logits, _, _, _ = random_case(10, B=2, T=4, U=0)
    labels = jnp.zeros((2, 0), jnp.int32)
    t_len, u_len = jnp.array([4, 2]), jnp.array([0, 0])
    log_blank = jax.nn.log_softmax(logits, axis=-1)[:, :, 0, 0]  # [B, T]
    expected = -np.array([log_blank[0].sum(), log_blank[1, :2].sum()])
    np.testing.assert_allclose(tr.rnnt_loss(logits, labels, t_len, u_len), expected, atol=1e-5)


def test_zero_labels_agrees_with_optax_ctc():
    """With no labels the only path is all blanks, in the transducer as in CTC (optax.ctc_loss)."""
    logits, _, _, _ = random_case(11, B=3, T=6, U=0)
    t_len = jnp.array([6, 3, 1])
    ours = tr.rnnt_loss(logits, jnp.zeros((3, 0), jnp.int32), t_len, jnp.zeros(3, jnp.int32))
    paddings = (jnp.arange(6)[None] >= t_len[:, None]).astype(jnp.float32)
    ctc = optax.ctc_loss(logits[:, :, 0, :], paddings, jnp.zeros((3, 1), jnp.int32), jnp.ones((3, 1)))
    np.testing.assert_allclose(ours, ctc, atol=1e-5)


def test_padding_never_changes_the_loss():
    logits, labels, t_len, u_len = random_case(12)
    rng = np.random.default_rng(0)
    B, T, U1, V = logits.shape
    wide = jnp.asarray(10 * rng.normal(size=(B, T + 3, U1 + 2, V)), jnp.float32).at[:, :T, :U1].set(logits)
    wide_labels = jnp.concatenate([labels, jnp.asarray(rng.integers(0, V, size=(B, 2)))], axis=1)
    np.testing.assert_allclose(tr.rnnt_loss(wide, wide_labels, t_len, u_len), tr.rnnt_loss(logits, labels, t_len, u_len),
                               atol=1e-5)


def test_works_under_jit_with_traced_or_closed_over_lengths():
    case = random_case(13)
    np.testing.assert_allclose(jax.jit(tr.rnnt_loss)(*case), tr.rnnt_loss(*case), atol=1e-6)
    closed = jax.jit(lambda z: tr.rnnt_loss(z, *case[1:]))
    np.testing.assert_allclose(closed(case[0]), tr.rnnt_loss(*case), atol=1e-6)


# --------------------------------------------------------------------------------------------
# The gradient
# --------------------------------------------------------------------------------------------


def test_gradient_matches_finite_differences_of_the_brute_force():
    """jax.grad of the float32 DP against central differences of the float64 path enumeration."""
    logits, labels, t_len, u_len = random_case(14, B=2, T=3, U=2, V=4, scale=1.0)
    grad = np.asarray(jax.grad(lambda z: tr.rnnt_loss(z, labels, t_len, u_len).sum())(logits))
    base = np.asarray(logits, np.float64)
    numeric = np.zeros_like(base)
    eps = 1e-5
    for index in itertools.product(*map(range, base.shape)):
        up, down = base.copy(), base.copy()
        up[index] += eps
        down[index] -= eps
        numeric[index] = (tr.rnnt_loss_brute_force(up, labels, t_len, u_len).sum()
                          - tr.rnnt_loss_brute_force(down, labels, t_len, u_len).sum()) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=2e-5)


def test_double_loop_gives_the_same_loss_and_autodiff_the_same_gradient():
    """The nested scans compute the same loss; jax.grad through them checks the custom backward pass
    (Graves's formula), with a cotangent that differs per example."""
    logits, labels, t_len, u_len = random_case(8)
    ours, vjp_ours = jax.vjp(lambda z: tr.rnnt_loss(z, labels, t_len, u_len), logits)
    nested, vjp_nested = jax.vjp(lambda z: tr.rnnt_loss_nested_scan(z, labels, t_len, u_len), logits)
    np.testing.assert_allclose(ours, nested, atol=1e-5)
    for cotangent in (jnp.ones(4), jnp.arange(1.0, 5.0)):
        np.testing.assert_allclose(vjp_ours(cotangent)[0], vjp_nested(cotangent)[0], atol=1e-5)


def _enable_x64():
    """float64 for one block: `jax.enable_x64` from jax 0.8, `jax.experimental.enable_x64` before."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64

    return enable_x64(True)


def test_check_grads_in_float64():
    logits, labels, t_len, u_len = random_case(15, B=2, T=4, U=3, V=5)
    with _enable_x64():
        z = jnp.asarray(np.asarray(logits), jnp.float64)
        check_grads(lambda x: tr.rnnt_loss(x, labels, t_len, u_len), (z,), order=1, modes=["rev"],
                                  atol=1e-6, rtol=1e-6)


def test_gradient_is_graves_alpha_beta_formula():
    """d log Pr / d logit_k(t,u) = xi_k(t,u) - Pr(k|t,u) gamma(t,u), with the posteriors of the moves
    xi_blank = alpha(t,u) blank(t,u) beta(t+1,u) / Pr and xi_y = alpha(t,u) y(t,u) beta(t,u+1) / Pr."""
    logits, labels, t_len, u_len = random_case(16)
    grad = -np.asarray(jax.grad(lambda z: tr.rnnt_loss(z, labels, t_len, u_len).sum())(logits))
    alpha = np.exp(np.asarray(tr.forward_variables(logits, labels, t_len, u_len), np.float64))
    beta = np.exp(np.asarray(tr.backward_variables(logits, labels, t_len, u_len), np.float64))
    p = np.asarray(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), np.float64)
    expected = np.zeros_like(p)
    for b in range(4):
        T, U = int(t_len[b]), int(u_len[b])
        pr = alpha[b, T - 1, U] * p[b, T - 1, U, 0]
        for t, u in itertools.product(range(T), range(U + 1)):
            after_blank = 1.0 if (t, u) == (T - 1, U) else (beta[b, t + 1, u] if t + 1 < T else 0.0)
            xi = np.zeros(p.shape[-1])
            xi[0] = alpha[b, t, u] * p[b, t, u, 0] * after_blank / pr
            if u < U:
                xi[labels[b, u]] += alpha[b, t, u] * p[b, t, u, labels[b, u]] * beta[b, t, u + 1] / pr
            gamma = alpha[b, t, u] * beta[b, t, u] / pr
            expected[b, t, u] = xi - p[b, t, u] * gamma
    np.testing.assert_allclose(grad, expected, atol=2e-5)


# --------------------------------------------------------------------------------------------
# Forward and backward variables, occupancy, the best path, counting
# --------------------------------------------------------------------------------------------


def test_beta_at_the_origin_and_every_antidiagonal_give_the_likelihood():
    logits, labels, t_len, u_len = random_case(17, B=4, T=6, U=4)
    log_pr = -np.asarray(tr.rnnt_loss(logits, labels, t_len, u_len))
    log_alpha = np.asarray(tr.forward_variables(logits, labels, t_len, u_len))
    log_beta = np.asarray(tr.backward_variables(logits, labels, t_len, u_len))
    np.testing.assert_allclose(log_beta[:, 0, 0], log_pr, atol=1e-5)
    gamma = np.asarray(tr.occupancy(logits, labels, t_len, u_len))
    for b in range(4):
        T, U = int(t_len[b]), int(u_len[b])
        for n in range(T + U):
            cells = [(t, n - t) for t in range(T) if 0 <= n - t <= U]
            total = np.logaddexp.reduce([log_alpha[b, t, u] + log_beta[b, t, u] for t, u in cells])
            np.testing.assert_allclose(total, log_pr[b], atol=1e-4)
            np.testing.assert_allclose(sum(gamma[b, t, u] for t, u in cells), 1.0, atol=1e-5)
        assert np.all(gamma[b, T:] == 0) and np.all(gamma[b, :, U + 1:] == 0)
        assert np.all(np.isneginf(log_alpha[b, T:])) and np.all(np.isneginf(log_alpha[b, :, U + 1:]))


def test_viterbi_finds_the_best_enumerated_path():
    logits, labels, t_len, u_len = random_case(18, B=4, T=5, U=3)
    best = tr.viterbi_alignment(logits, labels, t_len, u_len)
    logp = np.asarray(jax.nn.log_softmax(logits, axis=-1), np.float64)
    for b in range(4):
        T, U = int(t_len[b]), int(u_len[b])
        scores = {}
        for moves in tr.alignments(T, U):
            t = u = 0
            nodes, score = [], 0.0
            for write in moves:
                nodes.append((t, u))
                score += logp[b, t, u, labels[b, u]] if write else logp[b, t, u, 0]
                t, u = (t, u + 1) if write else (t + 1, u)
            scores[tuple(nodes)] = score
        path = max(scores, key=scores.get)
        mask = np.asarray(best.mask[b])
        assert mask.sum() == T + U
        got = tuple(zip(np.asarray(best.t[b])[mask].tolist(), np.asarray(best.u[b])[mask].tolist()))
        assert got == path
        np.testing.assert_allclose(best.log_prob[b], scores[path], atol=1e-5)
        # the frame of each label: where the path moves from (t, u) to (t, u+1)
        frames = [t for (t, u), (_, u2) in zip(path, path[1:]) if u2 == u + 1]
        assert np.asarray(best.frames[b]).tolist() == frames + [-1] * (3 - U)


@pytest.mark.parametrize("T, U1", [(1, 1), (4, 1), (1, 5), (5, 3), (2, 7)])
def test_diagonals_lay_the_lattice_out_by_anti_diagonals(T, U1):
    x = np.arange(1.0, 2 * T * U1 + 1).reshape(2, T, U1)
    skewed = np.asarray(tr.skew(jnp.asarray(x), fill=-7.0))
    assert skewed.shape == (2, T + U1 - 1, U1)
    for n, u in itertools.product(range(T + U1 - 1), range(U1)):
        expected = x[:, n - u, u] if 0 <= n - u < T else np.full(2, -7.0)
        np.testing.assert_array_equal(skewed[:, n, u], expected)
    np.testing.assert_array_equal(tr.unskew(jnp.asarray(skewed), T), x)
    np.testing.assert_array_equal(tr.diagonals(jnp.asarray(x), fill=-7.0), np.swapaxes(skewed, 0, 1))


def test_counting_and_listing_alignments():
    for T, U in itertools.product(range(1, 6), range(0, 5)):
        paths = list(tr.alignments(T, U))
        assert len(paths) == len(set(paths)) == tr.count_alignments(T, U) == math.comb(T + U - 1, U)
        assert all(len(p) == T + U and sum(p) == U and not p[-1] for p in paths)
    with pytest.raises(ValueError, match="T"):
        tr.count_alignments(0, 3)
    with pytest.raises(ValueError, match="U"):
        tr.count_alignments(3, -1)


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda c: (c[0][0], *c[1:]), "logits"),
        (lambda c: (c[0].astype(jnp.int32), *c[1:]), "logits"),
        (lambda c: (c[0], c[1][:, :-1], *c[2:]), "labels"),
        (lambda c: (c[0], c[1].astype(jnp.float32), *c[2:]), "labels"),
        (lambda c: (c[0], c[1].at[0, 0].set(0), *c[2:]), "labels"),
        (lambda c: (c[0], c[1].at[0, 0].set(99), *c[2:]), "labels"),
        (lambda c: (*c[:2], c[2].at[0].set(0), c[3]), "logit_lengths"),
        (lambda c: (*c[:2], c[2].at[0].set(6), c[3]), "logit_lengths"),
        (lambda c: (*c[:2], c[2][:2], c[3]), "logit_lengths"),
        (lambda c: (*c[:2], c[2].astype(jnp.float32), c[3]), "logit_lengths"),
        (lambda c: (*c[:3], c[3].at[0].set(-1)), "label_lengths"),
        (lambda c: (*c[:3], c[3].at[0].set(5)), "label_lengths"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(change, match):
    case = change(random_case(19))
    for fn in (tr.rnnt_loss, tr.rnnt_loss_nested_scan, tr.rnnt_loss_brute_force, tr.occupancy, tr.viterbi_alignment):
        with pytest.raises(ValueError, match=match):
            fn(*case)


def test_bad_blank_raises():
    with pytest.raises(ValueError, match="blank"):
        tr.rnnt_loss(*random_case(20), blank=6)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

TASK = tasks.get_task("copy")
V = len(TASK.target_vocab)


def small(seed=0, **sizes):
    sizes = dict(embed=8, hidden=16, prediction=16, joint=16) | sizes
    return tr.Transducer(len(TASK.source_vocab), V, rngs=nnx.Rngs(seed), **sizes)


@nnx.jit
def logits_and_loss(model, batch):
    logits = model(batch.source, batch.source_lengths, batch.target_in, batch.target_lengths - 1)
    return logits, tr.loss(model, batch)[0]


def test_model_shapes_forbidden_outputs_and_padding():
    model = small()
    pairs = tasks.generate(TASK, 3, seed=1, min_length=2, max_length=6)
    batch = tasks.make_batch(pairs, TASK)
    logits, value = logits_and_loss(model, batch)
    B, T = batch.source.shape
    assert logits.shape == (B, T, batch.target_in.shape[1], V)
    assert np.all(np.asarray(logits)[..., [tasks.BOS_ID, tasks.EOS_ID]] < -1e8)
    expected = tr.rnnt_loss_brute_force(logits, batch.target_in[:, 1:], batch.source_lengths, batch.target_lengths - 1)
    np.testing.assert_allclose(value, expected.sum() / batch.target_lengths.sum(), rtol=1e-5)
    # more padding on both sides changes nothing
    wide = tasks.make_batch(pairs, TASK, source_width=T + 3, target_width=batch.target_in.shape[1] + 2)
    np.testing.assert_allclose(logits_and_loss(model, wide)[1], value, rtol=1e-5)


def test_greedy_decoding_caps_symbols_per_frame():
    """A joint network that always prefers label 5 writes exactly max_symbols labels per frame."""
    model = small()
    model.joint_out.bias[...] = jnp.zeros(V).at[5].set(100.0)
    source = jnp.array([[3, 4, 5, 2, 0], [3, 2, 0, 0, 0]])
    lengths = jnp.array([4, 2])
    tokens, n = tr.greedy_decode(model, source, lengths, max_symbols=2)
    np.testing.assert_array_equal(n, [8, 4])
    assert np.all(np.asarray(tokens)[0, :8] == 5) and np.all(np.asarray(tokens)[1, 4:] == 0)
    tokens, n = tr.greedy_decode(model, source, lengths, max_symbols=2, max_length=5)
    np.testing.assert_array_equal(n, [5, 4])
    model.joint_out.bias[...] = jnp.zeros(V).at[0].set(100.0)  # always blank: writes nothing
    tokens, n = tr.greedy_decode(model, source, lengths, max_symbols=2)
    np.testing.assert_array_equal(n, [0, 0])
    with pytest.raises(ValueError, match="max_symbols"):
        tr.greedy_decode(model, source, lengths, max_symbols=0)
    with pytest.raises(ValueError, match="source_lengths"):
        tr.greedy_decode(model, source, jnp.array([4, 6]))


def test_learns_to_copy_and_decodes_it_greedily():
    """A tiny overfit through the shared training loop, then exact greedy copies."""
    pairs = tasks.generate(TASK, 16, seed=3, min_length=2, max_length=6)
    batch = tasks.make_batch(pairs, TASK)
    model = small(embed=16)
    history = train.fit(model, tr.loss, itertools.repeat(batch), steps=80, learning_rate=3e-2, progress=False,
                        log_every=20)
    assert history.loss[-1] < 0.05
    out = tr.transduce(model, pairs, TASK, batch_size=16)
    assert out.hypotheses == out.references


@pytest.mark.parametrize("kwargs, match", [(dict(hidden=0), "hidden"), (dict(joint=-1), "joint"),
                                           (dict(embed=2.5), "embed")])
def test_bad_model_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small(**kwargs)
