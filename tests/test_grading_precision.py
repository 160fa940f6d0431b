"""Right answers are right on every runtime: every exercise's solution through its check, with
float32 products as this CPU computes them and as a TPU computes them by default.

A TPU's default for a float32 matrix product is one bfloat16 pass: the operands are rounded to
bfloat16 (8 bits of mantissa) and the products summed in float32.  ``tpu_products`` imitates that
on the CPU, where XLA ignores the precision setting: every ``dot_general`` whose precision is the
default rounds its float32 operands to bfloat16 first, and one at ``highest`` does not.  The
solutions come from the chapter notebooks, the cases and references from what the autograder
uses (:func:`attention_course.coursework.spec.resolve`); besides them, right answers written
here that order their products otherwise than the references.
"""

import contextlib
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_course import coursework, grading
from attention_course.coursework import spec

NUMBERS = sorted(coursework.CHAPTERS)


@functools.cache
def recorded(number):
    """The chapter's check calls, and the namespace its import and solution cells ran in."""
    ch = coursework.chapter(number)
    return spec.record(ch, json.loads(ch.notebook.read_text(encoding="utf-8")))


@contextlib.contextmanager
def tpu_products():
    from jax._src.lax import lax as lax_internal

    primitive = lax_internal.dot_general_p
    bind = primitive.bind

    def rounded(a):
        if getattr(a, "dtype", None) != jnp.float32:
            return a
        return jax.lax.convert_element_type(jax.lax.convert_element_type(a, jnp.bfloat16),
                                            jnp.float32)

    def emulated(lhs, rhs, **params):
        precision = params.get("precision")
        parts = precision if isinstance(precision, tuple) else (precision,)
        if all(p in (None, jax.lax.Precision.DEFAULT) for p in parts):
            lhs, rhs = rounded(lhs), rounded(rhs)
        return bind(lhs, rhs, **params)

    primitive.bind = emulated
    jax.clear_caches()  # nothing traced before may answer
    try:
        yield
    finally:
        del primitive.bind
        jax.clear_caches()


def test_the_emulation_rounds_default_products_only():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(32, 32)), jnp.float32)
    exact = np.asarray(x, np.float64) @ np.asarray(x, np.float64)
    with tpu_products():
        assert np.abs(jnp.einsum("ij,jk->ik", x, x) - exact).max() > 1e-2
        assert np.abs(jax.jit(jnp.matmul)(x, x) - exact).max() > 1e-2
        with jax.default_matmul_precision("highest"):
            assert np.abs(x @ x - exact).max() < 1e-4
    assert np.abs(x @ x - exact).max() < 1e-4


def _wrong(fn, atol, rtol):
    """``fn`` a little more wrong than the check's tolerance (and at least 1% and 1e-3)."""

    def off(x):
        if isinstance(x, tuple):
            return tuple(off(v) for v in x)
        a = np.asarray(x)
        return ~a if a.dtype == bool else a * (1.01 + 3 * rtol) + 1e-3 + 3 * atol

    return lambda *args, **kwargs: off(fn(*args, **kwargs))


def _graded_functions():
    """(chapter, exercise, name, solution, reference, cases, atol, rtol) of every graded
    function of every chapter."""
    out = []
    for number in NUMBERS:
        ch = coursework.chapter(number)
        calls, namespace = recorded(number)
        for ex in ch.exercises:
            parts, _ = spec.resolve(ex, calls.get(ex.label, []))
            for part in parts:
                if part.kind == "function":
                    out.append((number, ex.label, part.name, namespace[part.name],
                                part.reference, part.cases, part.atol, part.rtol))
    return out


GRADED = _graded_functions()
IDS = [f"{n}-{label}-{name}" for n, label, name, *_ in GRADED]


@pytest.mark.parametrize("graded", GRADED, ids=IDS)
def test_right_answers_pass_and_wrong_ones_fail_with_cpu_and_tpu_products(graded, capsys):
    number, label, name, solution, reference, cases, atol, rtol = graded
    for products in (contextlib.nullcontext, tpu_products):
        with products():
            assert grading.check(solution, reference, cases=cases, atol=atol, rtol=rtol,
                                 name=name), capsys.readouterr().out
            assert not grading.check(_wrong(solution, atol, rtol), reference, cases=cases, atol=atol,
                                     rtol=rtol, name=name)


# Right answers that order their products otherwise than the course's references (an elementwise
# sum for a matrix product, the scale before the product): under a TPU's default products, the
# reference's rounding and theirs differ by far more than 1e-5.
ALTERNATIVES = {
    "ex-search-score": """
def my_additive_score(s, h, W_a, U_a, v_a):
    hidden = jnp.tanh((s @ W_a)[:, None, :] + h @ U_a)
    return jnp.sum(hidden * v_a, axis=-1)
""",
    "ex-luong-general": """
def my_general_score(h, hbar, W_a):
    return jnp.einsum("bn,bsn->bs", h, jnp.einsum("bsm,nm->bsn", hbar, W_a))
""",
    "ex-sdpa": """
def my_attention(q, k, v, mask):
    scores = jnp.einsum("btd,bsd->bts", q / jnp.sqrt(q.shape[-1]), k)
    scores = jnp.where(mask, scores, -jnp.inf)
    top = jnp.max(scores, axis=-1, keepdims=True)
    exp = jnp.where(mask, jnp.exp(scores - jnp.where(jnp.isfinite(top), top, 0.0)), 0.0)
    total = exp.sum(-1, keepdims=True)
    weights = exp / jnp.where(total > 0, total, 1.0)
    return jnp.sum(weights[..., None] * v[:, None], axis=2), weights
""",
    "ex-efficient-online": """
def my_online_update(m, l, acc, scores, v_block):
    m_new = jnp.maximum(m, scores.max(axis=-1))
    p = jnp.exp(scores - m_new[:, None])
    correction = jnp.exp(m - m_new)
    acc_new = correction[:, None] * acc + jnp.sum(p[:, :, None] * v_block, axis=1)
    return m_new, correction * l + p.sum(axis=-1), acc_new
""",
    "ex-efficient-step": """
def my_linear_step(state, z, q_t, k_t, v_t):
    phi_q, phi_k = efficient.elu_plus_one(q_t), efficient.elu_plus_one(k_t)
    state = state + phi_k[:, None] * v_t[None, :]
    z = z + phi_k
    return state, z, jnp.sum(phi_q[:, None] * state, 0) / (jnp.sum(phi_q * z) + 1e-6)
""",
}


def _alternatives():
    out = []
    for number in NUMBERS:
        ch = coursework.chapter(number)
        labels = [ex.label for ex in ch.exercises if ex.label in ALTERNATIVES]
        if not labels:
            continue
        calls, namespace = recorded(number)
        for label in labels:
            (part,), _ = spec.resolve(ch.exercise(label), calls[label])
            scope = dict(namespace)
            exec(ALTERNATIVES[label], scope)
            out.append((label, part.name, scope[part.name], part.reference, part.cases,
                        part.atol, part.rtol))
    return out


OTHER_ORDERS = _alternatives()


def test_every_alternative_is_tested():
    assert sorted(label for label, *_ in OTHER_ORDERS) == sorted(ALTERNATIVES)


@pytest.mark.parametrize("graded", OTHER_ORDERS, ids=[g[0] for g in OTHER_ORDERS])
def test_right_answers_in_another_order_pass_with_tpu_products(graded, capsys):
    label, name, solution, reference, cases, atol, rtol = graded
    for products in (contextlib.nullcontext, tpu_products):
        with products():
            assert grading.check(solution, reference, cases=cases, atol=atol, rtol=rtol,
                                 name=name), capsys.readouterr().out


def test_without_the_checks_numerics_they_fail_with_tpu_products(monkeypatch, capsys):
    """The check's own precision (``grading.numerics``) is what makes them pass."""
    monkeypatch.setattr(grading, "numerics", contextlib.nullcontext)
    failed = []
    with tpu_products():
        for label, name, solution, reference, cases, atol, rtol in OTHER_ORDERS:
            if not grading.check(solution, reference, cases=cases, atol=atol, rtol=rtol):
                failed.append(label)
    out = capsys.readouterr().out
    assert sorted(failed) == sorted(ALTERNATIVES), out
