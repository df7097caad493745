"""Every built-in text metric maps any Unicode string (lone surrogates included) to a finite
number, NaN (undefined), or a one-line HeredityError; the score cache keys any string."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heredity.errors import HeredityError
from heredity.metrics import MetricContext, get_metric, list_metrics
from heredity.metrics.cache import ScoreCache, text_key

# Model-based metrics need weights or a service: perplexity, loglik, judge, reward, the
# embedding-based toxicity, detoxify and Perspective.
MODEL_BASED = {"perplexity", "loglik", "judge", "reward", "toxicity", "toxicity-detoxify", "toxicity-perspective"}
TEXT_METRICS = sorted(m.name for m in list_metrics() if m.origin == "heredity" and m.name not in MODEL_BASED)

# Any code point, surrogates (category Cs) included, plus text shaped like the hard cases:
# punctuation only, no sentence ends, very long words.
ANY_CHAR = st.characters(codec=None, categories=None)
TEXTS = st.one_of(
    st.text(ANY_CHAR, max_size=200),
    st.text(st.sampled_from(".,;:!?-'\"()[] \n\t…—"), max_size=50),
    st.builds(lambda w, n: (w + " ") * n, st.text(st.characters(categories=["L"]), min_size=1, max_size=8),
              st.integers(1, 3000)),
    st.text(st.sampled_from("ab \ud800\udfff\U0001f600.é"), max_size=100),
)


@pytest.fixture(scope="module")
def tokenizer_context() -> MetricContext:
    """The context a run gives: the student's tokenizer (the embedded model's) for ``length``."""
    from heredity.config import EMBEDDED_MODEL
    from heredity.core.models import load_tokenizer

    try:
        tokenizer = load_tokenizer(EMBEDDED_MODEL)
    except (HeredityError, ImportError) as exc:
        pytest.skip(f"no embedded tokenizer here: {exc}")
    return MetricContext(tokenizer=tokenizer, tokenizer_id=EMBEDDED_MODEL)


def _ok(value: float) -> bool:
    return isinstance(value, float | int) and (math.isfinite(value) or math.isnan(value))


@pytest.mark.parametrize("name", TEXT_METRICS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(text=TEXTS)
def test_metric_maps_any_string_to_a_number_nan_or_one_line_error(name, text, tokenizer_context):
    metric = get_metric(name)
    try:
        values = metric([text], tokenizer_context)
    except HeredityError as exc:
        assert "\n" not in str(exc).strip()
        return
    assert len(values) == 1 and _ok(values[0]), (name, text[:80], values)


@settings(max_examples=200, deadline=None)
@given(text=st.text(ANY_CHAR, max_size=100), prompt=st.text(ANY_CHAR, max_size=30))
def test_score_cache_keys_any_string(text, prompt):
    assert len(text_key(text)) == 16
    assert len(text_key(text, prompt, "tok")) == 16
    assert text_key(text) != text_key(text + "\ud800")


def test_score_cache_stores_scores_of_lone_surrogates(tmp_path):
    from heredity.metrics.scoring import score_texts

    cache = ScoreCache(tmp_path / "scores.sqlite")
    texts = ["fine text here.", "lone \ud800 surrogate", "\udfff", ""]
    first = score_texts(texts, ["words", "ttr", "flesch-reading-ease"], MetricContext(), cache=cache)
    again = score_texts(texts, ["words", "ttr", "flesch-reading-ease"], MetricContext(), cache=cache)
    assert cache.hits >= len(texts)
    for column in first:
        assert [v if v == v else "nan" for v in first[column]] == [v if v == v else "nan" for v in again[column]]
