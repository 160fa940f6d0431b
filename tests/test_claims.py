"""Claims (attention_course.claims), the seed knob (runtime.seed) and the seed study's reading of
executed notebooks (tools/seeds.py)."""

import json

import pytest

from attention_course import claims as claims_module
from attention_course import runtime
from attention_course.claims import ClaimError, Claims
from test_publish import load_tool


@pytest.fixture
def full(monkeypatch):
    for env in (runtime.FAST_ENV, runtime.SEED_ENV, claims_module.CLAIMS_ENV):
        monkeypatch.delenv(env, raising=False)


@pytest.fixture
def claims(full):
    return Claims("07_beyond")


# -- the seed knob ---------------------------------------------------------------------------


def test_seed_offsets_every_base_apart(monkeypatch, full):
    assert runtime.seed_offset() == 0 and runtime.seed(0) == 0 and runtime.seed(7) == 7
    monkeypatch.setenv(runtime.SEED_ENV, "2")
    assert runtime.seed_offset() == 2
    assert [runtime.seed(b) for b in (0, 1, 2)] == [2000, 2001, 2002]
    assert runtime.SEED_BANNER in runtime.report(), "a seeded run says so under its setup cell"
    monkeypatch.setenv(runtime.SEED_ENV, "1")
    assert set(runtime.seed(b) for b in range(3)).isdisjoint(range(3)), "offsets do not collide"


@pytest.mark.parametrize("text", ["-1", "one", "1.5"])
def test_a_bad_seed_offset_names_the_variable(monkeypatch, text):
    monkeypatch.setenv(runtime.SEED_ENV, text)
    with pytest.raises(ValueError, match=runtime.SEED_ENV):
        runtime.seed(0)


@pytest.mark.parametrize("base", [-1, 1.0, True, "0"])
def test_a_bad_base_seed_names_the_argument(full, base):
    with pytest.raises(ValueError, match="base"):
        runtime.seed(base)


def test_different_offsets_give_different_initialisations(monkeypatch, full):
    import jax
    from flax import nnx

    def weights():
        layer = nnx.Linear(3, 2, rngs=nnx.Rngs(runtime.seed(0)))
        return jax.device_get(jax.numpy.asarray(layer.kernel))

    first = weights()
    assert (weights() == first).all(), "the same offset gives the same numbers"
    monkeypatch.setenv(runtime.SEED_ENV, "1")
    assert not (weights() == first).all()


# -- words chosen by a stated rule -------------------------------------------------------------


@pytest.mark.parametrize("value, words", [(0.47, "less time than"), (0.86, "about the same time as"),
                                          (1.0, "about the same time as"), (1.15, "about the same time as"),
                                          (1.16, "more time than")])
def test_ratio_words_follow_the_band(claims, capsys, value, words):
    got = claims.ratio("blockwise_time", value, 1.0,
                       words=("less time than", "about the same time as", "more time than"))
    assert got == words
    out = capsys.readouterr().out
    assert f"blockwise_time = {words}" in out and "±15%" in out, "the rule and the numbers are shown"
    assert claims.results["blockwise_time"] == words


def test_compare_best_and_choose(claims, capsys):
    assert claims.compare("ppl", 1.0319, 1.0335) == "lower than"
    assert claims.compare("ppl", 1.0319, 1.0335, atol=0.002) == "the same as"
    assert claims.compare("ppl", 2.0, 1.0, rtol=0.5) == "higher than"
    assert claims.best("best", {"dot": 1.0335, "local-p": 1.0319}) == "local-p"
    assert claims.best("best", {"dot": 0.5, "local-p": 0.4}, lower_is_better=False) == "dot"
    assert claims.choose("flat", 0.9 > 0.8, "stays flat", "falls", rule="last/first > 0.8",
                         ratio=0.9) == "stays flat"
    assert "last/first > 0.8" in capsys.readouterr().out


@pytest.mark.parametrize("call, match", [
    (lambda c: c.ratio("r", 1.0, 0.0), "reference"),
    (lambda c: c.ratio("r", float("nan"), 1.0), "value"),
    (lambda c: c.ratio("r", 1.0, 1.0, within=1.5), "within"),
    (lambda c: c.ratio("r", 1.0, 1.0, words=("a", "b")), "words"),
    (lambda c: c.compare("r", "1", 1.0), "a"),
    (lambda c: c.best("r", {}), "values"),
    (lambda c: c.choose("r", True, "x", "y", rule=""), "rule"),
    (lambda c: c.check("r", True, ""), "statement"),
    (lambda c: c.check("not a name", True, "s"), "name"),
])
def test_bad_arguments_name_the_argument(claims, call, match):
    with pytest.raises(ValueError, match=match):
        call(claims)


def test_chapter_is_named_like_a_notebook():
    with pytest.raises(ValueError, match="chapter"):
        Claims("beyond")


# -- asserted sentences --------------------------------------------------------------------------


def test_a_true_check_prints_what_it_checked(claims, capsys):
    assert claims.check("memory_grows", 4.0 > 3.0, "memory grows fourfold", growth=4.0)
    assert "checked: memory grows fourfold (growth = 4)" in capsys.readouterr().out
    assert claims.results["memory_grows"] == "held"


def test_a_false_check_fails_in_full_mode_naming_chapter_claim_and_numbers(claims):
    with pytest.raises(ClaimError) as err:
        claims.check("blockwise_linear", 3.9 < 2.5, "blockwise memory grows linearly", growth=3.9)
    text = str(err.value)
    assert "07_beyond" in text and "'blockwise_linear'" in text and "growth = 3.9" in text
    assert claims.results["blockwise_linear"] == "failed"


def test_seeded_failure_names_the_offset(claims, monkeypatch):
    monkeypatch.setenv(runtime.SEED_ENV, "2")
    with pytest.raises(ClaimError, match="seed offset 2"):
        claims.check("c", False, "s")


def test_fast_mode_reports_a_false_check_unless_it_is_exact(claims, monkeypatch, capsys):
    monkeypatch.setenv(runtime.FAST_ENV, "1")
    assert not claims.check("bleu_flat", False, "the curve stays flat", drop=0.3)
    assert "not checked in fast mode" in capsys.readouterr().out
    assert claims.results["bleu_flat"] == "unchecked"
    with pytest.raises(ClaimError):
        claims.check("memory", False, "compiled memory grows fourfold", fast=True)
    monkeypatch.setenv(claims_module.CLAIMS_ENV, "strict")
    with pytest.raises(ClaimError):
        claims.check("bleu_flat", False, "the curve stays flat")


def test_the_seed_study_records_a_false_claim_and_runs_on(claims, monkeypatch, capsys):
    monkeypatch.setenv(claims_module.CLAIMS_ENV, "record")
    assert not claims.check("bleu_flat", False, "the curve stays flat", drop=0.3)
    out = capsys.readouterr().out
    assert "DOES NOT HOLD" in out and "'bleu_flat'" in out and "drop = 0.3" in out
    assert claims.results["bleu_flat"] == "failed"
    monkeypatch.setenv(runtime.FAST_ENV, "1")
    assert not claims.check("memory", False, "compiled memory grows fourfold", fast=True)
    assert claims.results["memory"] == "failed"


def test_spread_reads_the_committed_seed_study(tmp_path, monkeypatch, claims):
    monkeypatch.setattr(claims_module, "SEED_STUDY_DIR", tmp_path)
    assert claims.spread("x") is None, "no study: no spread"
    (tmp_path / "07_beyond.json").write_text(json.dumps(
        {"numbers": {"x": {"seeds": [1, 2, 3], "mean": 2, "min": 1, "max": 3}}}))
    assert claims.spread("x")["max"] == 3 and claims.spread("y") is None
    (tmp_path / "07_beyond.json").write_text(json.dumps(
        {"numbers": {"c": {"seeds": [[1, 2], [3, 4]], "mean": [2, 3], "min": [1, 2], "max": [3, 4]}}}))
    assert claims.spread("c", like=[0.5, 0.5])["max"] == [3, 4]
    assert claims.spread("c", like=[0.5, 0.5, 0.5]) is None, "the experiment changed since the study"
    monkeypatch.setenv(runtime.FAST_ENV, "1")
    assert claims.spread("c") is None, "fast mode's shrunk runs are not the study's"


def test_committed_seed_studies_belong_to_chapters():
    for path in claims_module.SEED_STUDY_DIR.glob("*.json"):
        study = json.loads(path.read_text())
        assert set(study) >= {"numbers", "claims", "stamp"}, path
        assert {"commit", "cpu", "jax", "seeds"} <= set(study["stamp"]), path
        assert len(study["stamp"]["seeds"]) >= 3, "at least three seeds"


# -- seeded builds keep out of the published book -----------------------------------------------------


def test_a_seeded_full_build_has_its_own_cache_and_config(monkeypatch):
    import yaml

    book = load_tool("book")
    assert book.cache_for(0) == book.CACHE
    assert book.cache_for(1) != book.CACHE and book.cache_for(1).is_relative_to(book.seed_root(1))
    monkeypatch.setenv(runtime.FAST_ENV, "1")
    monkeypatch.setenv(runtime.SEED_ENV, "5")
    env = book.full_env(1)
    assert runtime.FAST_ENV not in env and env[runtime.SEED_ENV] == "1"
    assert runtime.SEED_ENV not in book.full_env(0), "offset 0 builds the published book"
    monkeypatch.setattr(book, "seed_root", lambda seed, root=book.ROOT: root / "_build" / "test-seeds" / str(seed))
    try:
        config = yaml.safe_load(book._seeded_config(3).read_text())
        assert config["execute"]["cache"] == str(book.cache_for(3))
        assert config["execute"]["raise_on_error"] is True, "a failing claim fails the seeded build"
    finally:
        import shutil
        shutil.rmtree(book.ROOT / "_build" / "test-seeds", ignore_errors=True)
