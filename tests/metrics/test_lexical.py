"""Lexical-diversity metrics: hand-worked values, and agreement with lexicalrichness."""

from __future__ import annotations

from collections import Counter

import pytest

from heredity.metrics import get_metric, list_metrics
from heredity.metrics.lexical import (
    distinct_n,
    hdd,
    hdd_from_tokens,
    mattr,
    mattr_from_tokens,
    mtld,
    mtld_from_tokens,
    tokenize,
    ttr,
)

# --- tokenisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("", []),
        ("The cat", ["the", "cat"]),
        # digits and hyphens/dashes are deleted, joining what surrounds them
        ("Well-known FACTS: 3 cats & 2 dogs.", ["wellknown", "facts", "cats", "dogs"]),
        ("a\u2014b c\u2013d x2y", ["ab", "cd", "xy"]),
        # other ASCII punctuation becomes a space
        ("don't (stop) me_now", ["don", "t", "stop", "me", "now"]),
        # non-ASCII letters and punctuation are kept; Unicode whitespace splits
        ("Naïve café\u00a0«ok»", ["naïve", "café", "«ok»"]),
        ("a\x1cb", ["a", "b"]),
        ("123 --- !!!", []),
    ],
)
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


# --- MTLD, worked by hand (threshold 0.72) -----------------------------------------------------


def test_mtld_no_full_factor():
    # the cat sat on the mat: TTRs 1, 1, 1, 1, 4/5, 5/6 in both directions, so no factor
    # completes; the partial factor is (1 - 5/6) / (1 - 0.72) and MTLD = 6 / that = 10.08.
    assert mtld("the cat sat on the mat") == pytest.approx(10.08, rel=1e-12)


def test_mtld_full_factors():
    # a a a a: TTR 1, then 1/2 <= 0.72 ends a factor, twice; 4 tokens / 2 factors.
    assert mtld("a a a a") == 2.0
    # a b a b: a b a ends a factor at 2/3; the leftover "b" has TTR 1, so a partial factor of
    # 0 and 4 / 1 = 4, in both directions.
    assert mtld("a b a b") == 4.0


def test_mtld_directions_differ():
    # a b a c forward: "a b a" is a factor (2/3), "c" a zero partial -> 4 / 1 = 4.
    # backward (c a b a): TTR 1, 1, 1, 3/4 = 0.75 > 0.72 -> partial (1 - 0.75) / 0.28,
    # 4 / 0.892857... = 4.48. Mean: 4.24.
    assert mtld("a b a c") == pytest.approx(4.24, rel=1e-12)


def test_mtld_edge_cases():
    assert mtld("") == 0.0  # lexicalrichness divides by zero here
    assert mtld("42 -- ?!") == 0.0  # no tokens either
    assert mtld("one two three four five") == 5.0  # no repeats: MTLD is the length
    assert mtld("word") == 1.0
    # the threshold moves where factors end: at 0.8 the backward pass of "a b a c" (see
    # above) completes a factor at 3/4 = 0.75, so both directions give 4 / 1.
    assert mtld("a b a c", threshold=0.8) == 4.0
    with pytest.raises(ValueError):
        mtld("a b", threshold=1.0)


def test_mtld_tokens_and_text_agree():
    text = "The quick brown fox jumps over the lazy dog, and the dog sleeps."
    assert mtld_from_tokens(tokenize(text)) == mtld(text)


# --- HD-D, MATTR, TTR, distinct-n ----------------------------------------------------------


def test_hdd_small_draws():
    # a a b, 2 draws from 3 tokens: "a" (f=2) always appears, "b" (f=1) is absent with
    # probability C(2,2)/C(3,2) = 1/3. HD-D = (1 + 2/3) / 2 = 5/6.
    assert hdd_from_tokens(["a", "a", "b"], draws=2) == pytest.approx(5 / 6, rel=1e-12)


def test_hdd_default_draws():
    words = [f"w{i}" for i in range(42)]
    # exactly 42 distinct tokens: every type is drawn, HD-D = 42/42
    assert hdd_from_tokens(words) == pytest.approx(1.0, rel=1e-12)
    # 43 tokens, "w0" twice: w0 is always drawn, each other type is absent with probability
    # C(42,42)/C(43,42) = 1/43, so HD-D = (1 + 41 * 42/43) / 42.
    expected = (1 + 41 * 42 / 43) / 42
    assert hdd_from_tokens(words + ["w0"]) == pytest.approx(expected, rel=1e-12)


def test_hdd_short_text_is_ttr():
    assert hdd("the cat sat on the mat") == pytest.approx(5 / 6)
    assert hdd("") == 0.0
    with pytest.raises(ValueError):
        hdd("a b", draws=0)


def test_mattr():
    # windows of 2 over a a b: {a} then {a, b} -> (1/2 + 2/2) / 2
    assert mattr_from_tokens(["a", "a", "b"], window=2) == pytest.approx(0.75, rel=1e-12)
    words = [f"w{i}" for i in range(50)]
    # 51 tokens, window 50: the two windows hold 50 and 49 types -> (1 + 0.98) / 2
    assert mattr_from_tokens(words + ["w1"]) == pytest.approx(0.99, rel=1e-12)
    # at most 50 tokens: the TTR of the whole text
    assert mattr("the cat sat on the mat") == pytest.approx(5 / 6)
    assert mattr("") == 0.0


def test_ttr_and_distinct():
    text = "the cat sat on the mat"
    assert ttr(text) == pytest.approx(5 / 6)
    assert distinct_n(text, 1) == pytest.approx(5 / 6)
    assert distinct_n(text, 2) == 1.0  # five different bigrams
    assert distinct_n("a a a", 1) == pytest.approx(1 / 3)
    assert distinct_n("a a a", 2) == 0.5  # (a, a) twice
    assert distinct_n("a", 2) == 0.0  # no bigram
    assert ttr("") == 0.0
    assert distinct_n("", 1) == 0.0


# --- registry -------------------------------------------------------------------------------


def test_registry():
    metric = get_metric("mtld")
    assert metric.name == "mtld"
    assert metric.better == "higher"
    texts = ["the cat sat on the mat", "", "a a a a"]
    assert metric(texts) == [mtld(t) for t in texts]
    names = {m.name for m in list_metrics()}
    assert {"mtld", "hdd", "mattr", "ttr", "distinct-1", "distinct-2"} <= names
    assert get_metric("distinct-2")(["a a a"]) == [0.5]
    assert get_metric("hdd")(["the cat sat on the mat"]) == [pytest.approx(5 / 6)]


# --- agreement with lexicalrichness on every alpaca_eval output ----------------------------


def test_matches_lexicalrichness(alpaca_texts):
    lr_module = pytest.importorskip("lexicalrichness")
    worst = Counter()
    compared = windowed = 0
    for text in alpaca_texts:
        ref = lr_module.LexicalRichness(text)
        assert tokenize(text) == ref.wordlist
        if ref.words == 0:  # lexicalrichness raises ZeroDivisionError; we define 0.0
            assert mtld(text) == 0.0 and ttr(text) == 0.0
            continue
        compared += 1
        worst["mtld"] = max(worst["mtld"], abs(mtld(text) - ref.mtld(threshold=0.72)))
        worst["ttr"] = max(worst["ttr"], abs(ttr(text) - ref.ttr))
        if ref.words >= 50:
            worst["mattr"] = max(worst["mattr"], abs(mattr(text) - ref.mattr(window_size=50)))
            windowed += 1
    # Every output of the excerpt (12 models x 50 instructions = 600 texts) was read; nearly all have
    # words (all 600 do), and most are long enough for a 50-token MATTR window (538).
    assert len(alpaca_texts) == 600
    assert compared > 0.9 * len(alpaca_texts)
    assert windowed > 0.5 * len(alpaca_texts)
    assert worst["mtld"] <= 1e-9, worst
    assert worst["ttr"] <= 1e-9, worst
    assert worst["mattr"] <= 1e-9, worst


def test_hdd_matches_lexicalrichness(alpaca_texts):
    lr_module = pytest.importorskip("lexicalrichness")
    hypergeom = pytest.importorskip("scipy.stats").hypergeom
    # LexicalRichness.hdd calls scipy once per type (25 s for all texts), so it runs on every
    # 10th text; all texts are checked against its formula with scipy vectorised per text.
    for i, text in enumerate(alpaca_texts):
        words = tokenize(text)
        if len(words) < 42:
            continue
        if i % 10 == 0:
            ref = lr_module.LexicalRichness(text).hdd(draws=42)
        else:
            freqs = list(Counter(words).values())
            ref = float(((1 - hypergeom.pmf(0, len(words), freqs, 42)) / 42).sum())
        assert abs(hdd(text) - ref) <= 1e-9, (i, hdd(text), ref)
