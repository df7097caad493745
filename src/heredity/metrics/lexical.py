"""Lexical-diversity metrics: MTLD, HD-D, MATTR, TTR and distinct-n.

Every metric here works on the same word tokens, produced by :func:`tokenize`, which
reproduces the default tokenisation of ``lexicalrichness`` 0.5.1 exactly:

* the text is lower-cased;
* ASCII digits ``0-9`` and the characters ``-`` (hyphen-minus), ``\u2013`` (en dash) and
  ``\u2014`` (em dash) are deleted, so "well-known" is one token, "wellknown";
* every other ASCII punctuation character (``string.punctuation``) becomes a space;
* the result is split on whitespace (``str.split()``, Unicode whitespace included).

With the same tokens, ``mtld``, ``hdd``, ``mattr`` and ``ttr`` equal
``LexicalRichness(text).mtld(threshold=0.72)``, ``.hdd(draws=42)``, ``.mattr(window_size=50)``
and ``.ttr`` to 1e-9 (the tests check every alpaca_eval output; MTLD and TTR agree bit for bit,
HD-D and MATTR to about 1e-14, as they sum in a different order). Where lexicalrichness raises
instead of returning a number, these functions return a defined value:

* a text with no tokens (empty, or only digits and punctuation) scores 0.0 on every metric;
* ``hdd`` of a text shorter than ``draws`` tokens, and ``mattr`` of a text shorter than
  ``window`` tokens, is the text's TTR. Both metrics are an average TTR over samples of a fixed
  size (HD-D: the expected TTR of a random ``draws``-token sample; MATTR: the mean TTR of every
  ``window``-token window); when the text is shorter than that size the only sample is the whole
  text, and at exactly that size lexicalrichness itself returns the TTR, so the values are
  continuous at the boundary.

``distinct-1`` and ``distinct-2`` are distinct n-grams / total n-grams over the same tokens
(so ``distinct-1`` equals ``ttr``), 0.0 for a text with no n-gram.
"""

from __future__ import annotations

import string
from collections import Counter
from typing import Sequence

from heredity.metrics.registry import MetricContext, register

__all__ = [
    "tokenize",
    "ttr",
    "mtld",
    "mtld_from_tokens",
    "hdd",
    "hdd_from_tokens",
    "mattr",
    "mattr_from_tokens",
    "distinct_n",
    "distinct_n_from_tokens",
]

# --- tokenisation -------------------------------------------------------------------------

_DELETED = "0123456789-\u2013\u2014"
# '-' is in string.punctuation but is deleted (joining the word halves), not spaced.
_SPACED = "".join(p for p in string.punctuation if p not in _DELETED)

# lexicalrichness applies its edits one after another, but each maps a single character to a
# fixed result independent of its neighbours, so one translation table gives the same text.
_STR_TABLE = str.maketrans({**{c: None for c in _DELETED}, **{c: " " for c in _SPACED}})

# Most texts are pure ASCII; bytes.translate on them is several times faster than
# str.translate. bytes.split() knows fewer whitespace characters than str.split() (it misses
# \x1c-\x1f), so those become spaces here to keep the two splits identical.
_BYTES_TABLE = bytearray(range(256))
for _c in _SPACED + "\x1c\x1d\x1e\x1f":
    _BYTES_TABLE[ord(_c)] = ord(" ")
_BYTES_TABLE = bytes(_BYTES_TABLE)
_BYTES_DELETED = b"0123456789-"


def _tokens(text: str) -> list:
    """Tokens as ``bytes`` for ASCII text and ``str`` otherwise: only equality matters inside."""
    text = text.lower()
    if text.isascii():
        return text.encode("ascii").translate(_BYTES_TABLE, _BYTES_DELETED).split()
    return text.translate(_STR_TABLE).split()


def tokenize(text: str) -> list[str]:
    """Word tokens of ``text``, exactly as lexicalrichness's default preprocessor + tokenizer."""
    return text.lower().translate(_STR_TABLE).split()


# --- TTR ----------------------------------------------------------------------------------


def _ttr(words: Sequence) -> float:
    return len(set(words)) / len(words) if words else 0.0


def ttr(text: str) -> float:
    """Type-token ratio: distinct tokens / tokens (0.0 for a text with no tokens)."""
    return _ttr(_tokens(text))


# --- MTLD ---------------------------------------------------------------------------------

# _NEED[threshold][t] = the fewest tokens k for which a segment holding t types has
# t / k <= threshold (as floats, the comparison lexicalrichness makes). A segment's TTR can
# only reach the threshold once its length reaches _NEED[t], so the inner loops compare two
# ints per token instead of dividing.
_NEED: dict[float, list[int]] = {}


def _need_table(threshold: float, types: int) -> list[int]:
    need = _NEED.setdefault(threshold, [0])
    for t in range(len(need), types + 1):
        k = max(t, int(t / threshold))
        while k > t and t / (k - 1) <= threshold:
            k -= 1
        while t / k > threshold:
            k += 1
        need.append(k)
    return need


def _factors_to_mtld(n: int, factors: int, partial_types: int, partial_len: int,
                     threshold: float) -> float:
    """One direction's MTLD from its full factors and the segment left at the end."""
    factor_count: float = factors
    if partial_len:
        # The unfinished last segment counts as the fraction of a factor its TTR has
        # travelled from 1 towards the threshold.
        factor_count += (1 - partial_types / partial_len) / (1 - threshold)
    if factor_count == 0:
        # No factor completed and the leftover segment's TTR is exactly 1: the whole text
        # repeats no word. lexicalrichness then counts one factor, so MTLD = n.
        factor_count = 1
    return n / factor_count


def mtld_from_tokens(words: Sequence, threshold: float = 0.72) -> float:
    """MTLD of a token sequence; see :func:`mtld`."""
    if not 0 < threshold < 1:
        raise ValueError(f"MTLD threshold must be between 0 and 1, got {threshold}")
    n = len(words)
    if n == 0:
        return 0.0
    need = _need_table(threshold, n)

    # Forward pass. A token starts a new type in the segment beginning at s iff the word's
    # previous occurrence is before s; `last` gives that occurrence, and the pass also records
    # each token's next occurrence, which the backward pass needs.
    last: dict = {}
    get_last = last.get
    nxt = [n] * n
    s = t = factors = limit = 0  # segment start, its types, full factors, end index allowed
    i = -1
    for w in words:
        i += 1
        p = get_last(w, -1)
        last[w] = i
        if p >= 0:
            nxt[p] = i
        if p < s:
            t += 1
            limit = s + need[t] - 1
        if i >= limit:  # this segment's TTR has dropped to the threshold: a full factor
            factors += 1
            s = i + 1
            t = 0
    forward = _factors_to_mtld(n, factors, t, n - s, threshold)

    # Backward pass, the mirror image: the segment ends at e, and a token is new in it iff
    # the word's next occurrence is after e.
    e = n - 1
    t = factors = 0
    limit = n
    i = n
    for q in reversed(nxt):
        i -= 1
        if q > e:
            t += 1
            limit = e - need[t] + 1
        if i <= limit:
            factors += 1
            e = i - 1
            t = 0
    backward = _factors_to_mtld(n, factors, t, e + 1, threshold)

    # statistics.mean of two floats (what lexicalrichness uses) is the correctly rounded
    # (a + b) / 2, which is exactly what this float expression gives.
    return (forward + backward) / 2


def mtld(text: str, threshold: float = 0.72) -> float:
    """Measure of Textual Lexical Diversity (McCarthy & Jarvis 2010).

    The mean length of the sequential segments whose TTR stays above ``threshold``,
    averaged over a forward and a backward pass, with the unfinished last segment counted
    as a partial factor. 0.0 for a text with no tokens; the token count for a text that
    repeats no word.
    """
    return mtld_from_tokens(_tokens(text), threshold)


# --- HD-D ---------------------------------------------------------------------------------


def hdd_from_tokens(words: Sequence, draws: int = 42) -> float:
    """HD-D of a token sequence; see :func:`hdd`."""
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"HD-D draws must be a positive integer, got {draws!r}")
    n = len(words)
    if n < draws:
        return _ttr(words)
    # HD-D = sum over types of P(type appears in a random sample of `draws` tokens) / draws.
    # P(absent) for a type of frequency f is the hypergeometric C(n - f, draws) / C(n, draws):
    # (n - draws) / n for f = 1, and each step up in f multiplies it by
    # C(n - f - 1, draws) / C(n - f, draws) = (n - f - draws) / (n - f). Types are grouped by
    # frequency, so each probability is computed once (and without scipy).
    freq_of_freq = Counter(Counter(words).values())
    max_f = max(freq_of_freq)
    absent = (n - draws) / n
    total = 0.0
    for f in range(1, max_f + 1):
        if f in freq_of_freq:
            total += freq_of_freq[f] * (1.0 - absent)
        absent = absent * (n - f - draws) / (n - f) if n - f - draws > 0 else 0.0
    return total / draws


def hdd(text: str, draws: int = 42) -> float:
    """Hypergeometric distribution diversity (McCarthy & Jarvis 2007).

    The expected TTR of a random sample of ``draws`` tokens. A text shorter than ``draws``
    tokens scores its TTR (0.0 with no tokens).
    """
    return hdd_from_tokens(_tokens(text), draws)


# --- MATTR --------------------------------------------------------------------------------


def mattr_from_tokens(words: Sequence, window: int = 50) -> float:
    """MATTR of a token sequence; see :func:`mattr`."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"MATTR window must be a positive integer, got {window!r}")
    n = len(words)
    if n <= window:
        return _ttr(words)
    counts: dict = {}
    for w in words[:window]:
        counts[w] = counts.get(w, 0) + 1
    types = len(counts)
    total_types = types
    for i in range(window, n):
        out = words[i - window]
        c = counts[out] - 1
        counts[out] = c
        if c == 0:
            types -= 1
        w = words[i]
        c = counts.get(w, 0)
        counts[w] = c + 1
        if c == 0:
            types += 1
        total_types += types
    # lexicalrichness sums the per-window float TTRs; summing the integer type counts and
    # dividing once is the exact mean, within a few ulps of its value.
    return total_types / (window * (n - window + 1))


def mattr(text: str, window: int = 50) -> float:
    """Moving-average TTR (Covington & McFall 2010): mean TTR of every ``window``-token window.

    A text of at most ``window`` tokens scores its TTR (0.0 with no tokens).
    """
    return mattr_from_tokens(_tokens(text), window)


# --- distinct-n ---------------------------------------------------------------------------


def distinct_n_from_tokens(words: Sequence, n: int) -> float:
    """Distinct n-grams / n-grams of a token sequence (0.0 when it has no n-gram)."""
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    if n == 1:
        return len(set(words)) / total
    return len(set(zip(*(words[k:] for k in range(n))))) / total


def distinct_n(text: str, n: int) -> float:
    """Distinct n-grams / n-grams over the text's tokens (0.0 when it has no n-gram)."""
    return distinct_n_from_tokens(_tokens(text), n)


# --- registry -----------------------------------------------------------------------------


@register("mtld", description="MTLD lexical diversity (threshold 0.72, forward/backward mean)",
          better="higher")
def mtld_metric(texts: Sequence[str], context: MetricContext) -> list[float]:
    return [mtld_from_tokens(_tokens(t)) for t in texts]


@register("hdd", description="HD-D lexical diversity (42 draws; TTR below 42 tokens)",
          better="higher")
def hdd_metric(texts: Sequence[str], context: MetricContext) -> list[float]:
    return [hdd_from_tokens(_tokens(t)) for t in texts]


@register("mattr", description="Moving-average type-token ratio (window 50; TTR below 50 tokens)",
          better="higher")
def mattr_metric(texts: Sequence[str], context: MetricContext) -> list[float]:
    return [mattr_from_tokens(_tokens(t)) for t in texts]


@register("ttr", description="Type-token ratio: distinct words / words", better="higher")
def ttr_metric(texts: Sequence[str], context: MetricContext) -> list[float]:
    return [_ttr(_tokens(t)) for t in texts]


@register("distinct-1", description="Distinct unigrams / unigrams in the text", better="higher")
def distinct_1_metric(texts: Sequence[str], context: MetricContext) -> list[float]:
    return [distinct_n_from_tokens(_tokens(t), 1) for t in texts]


@register("distinct-2", description="Distinct bigrams / bigrams in the text", better="higher")
def distinct_2_metric(texts: Sequence[str], context: MetricContext) -> list[float]:
    return [distinct_n_from_tokens(_tokens(t), 2) for t in texts]
