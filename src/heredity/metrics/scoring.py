"""Scoring texts with the metric registry through the score cache: what the score stage does per
batch of candidates and the evaluate stage does to held-out answers.

A text already scored by the same metric version, options and (where they matter) prompt,
tokenizer and reference model is not scored again (:mod:`heredity.metrics.cache`), so
re-scoring a pool, adding a metric or scoring the eval answers of an unchanged student costs
only what is new. Per text that costs a cache key (a SHA-256 of the text) and a lookup per
metric; texts repeated within a batch are scored once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from heredity.config import RunConfig
from heredity.core.models import load_tokenizer, model_identity
from heredity.metrics.cache import ScoreCache, open_cache, text_keys
from heredity.metrics.registry import BoundMetric, MetricContext, resolve_all

MetricEntry = str | Mapping[str, Any] | BoundMetric


def tokenizer_identity(tokenizer: Any) -> str:
    """A stable id of a tokenizer (class, name and a hash of its vocabulary), computed once."""
    cached = getattr(tokenizer, "_heredity_identity", None)
    if cached:
        return cached
    vocab = sorted(tokenizer.get_vocab().items()) if hasattr(tokenizer, "get_vocab") else []
    digest = hashlib.sha256(repr((type(tokenizer).__name__, vocab)).encode("utf-8")).hexdigest()[:16]
    ident = f"{getattr(tokenizer, 'name_or_path', '')}|{digest}"
    try:
        tokenizer._heredity_identity = ident
    except AttributeError:
        pass
    return ident


def _options(context: MetricContext, options: Mapping[str, Mapping[str, Any]] | None):
    return options if options is not None else context.metric_options


def score_metric(bound: BoundMetric, texts: Sequence[str], context: MetricContext,
                 cache: ScoreCache | None) -> list[float]:
    """One column: cached values where present, the metric computed on the (unique) misses."""
    metric = bound.metric
    if cache is None or not texts:
        return bound(texts, context)
    prompts = context.prompts if metric.needs_prompts else None
    if metric.needs_prompts and (prompts is None or len(prompts) != len(texts)):
        return bound(texts, context)  # the metric raises the precise error
    tok_id = None
    if metric.needs_tokenizer:
        if context.tokenizer is None:
            return bound(texts, context)  # raises: needs a tokenizer
        tok_id = context.tokenizer_id or tokenizer_identity(context.tokenizer)
    keys = text_keys(texts, prompts, tok_id)
    ns = bound.namespace(context)
    found = cache.get(ns, keys)
    missing: dict[bytes, int] = {}  # key -> first index with it
    for i, key in enumerate(keys):
        if key not in found and key not in missing:
            missing[key] = i
    if missing:
        idx = list(missing.values())
        sub = replace(context, prompts=None if context.prompts is None else [context.prompts[i] for i in idx])
        values = bound([texts[i] for i in idx], sub)  # sub shares context.notes
        computed = dict(zip(missing, values))
        cache.put(ns, computed.items())
        found = {**found, **computed}
    return [found[k] for k in keys]


def score_texts(texts: list[str], metrics: Sequence[MetricEntry], context: MetricContext,
                *, options: Mapping[str, Mapping[str, Any]] | None = None,
                cache: bool | ScoreCache | None = True) -> dict[str, list[float]]:
    """``{column: values}`` for every metric entry (a name, ``module:function``, a mapping
    ``{name: ..., as: ..., **options}`` or a BoundMetric). ``options`` maps a column to its
    options (default: ``context.metric_options``). ``cache``: True for the default score cache
    (unless ``HEREDITY_SCORE_CACHE=0``), False for none, or a ScoreCache."""
    bound = resolve_all(list(metrics), _options(context, options))
    store = cache if isinstance(cache, ScoreCache) else open_cache(bool(cache))
    return score_batch(texts, bound, context, store)


def score_batch(texts: Sequence[str], bound: Sequence[BoundMetric], context: MetricContext,
                cache: ScoreCache | None) -> dict[str, list[float]]:
    """``{column: values}`` of one batch: what the score stage does per Parquet batch (and
    what a distributed runner can call per block). ``context.prompts``, when set, are the
    prompts of these texts."""
    return {b.column: score_metric(b, texts, context, cache) for b in bound}


def metric_versions(metrics: Sequence[MetricEntry],
                    options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, str]:
    """``{column: version}`` for stage keys; a metric with options adds their hash ("1+ab12...")
    and a renamed column names its metric ("perplexity@1+ab12...")."""
    out = {}
    for b in resolve_all(list(metrics), options or {}):
        out[b.column] = b.version if b.column == b.name else f"{b.name}@{b.version}"
    return out


def needs_tokenizer(metrics: Sequence[MetricEntry], options: Mapping[str, Mapping[str, Any]] | None = None) -> bool:
    return any(b.metric.needs_tokenizer for b in resolve_all(list(metrics), options or {}))


def reference_models(metrics: Sequence[MetricEntry], context: MetricContext,
                     options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """What model-based metrics depend on beyond their options (e.g. the student they default
    to), for stage keys: ``{column: identity}``."""
    out = {}
    for b in resolve_all(list(metrics), _options(context, options)):
        identity = b.metric.identity(dict(b.options), b.context(context)) if b.metric.identity else None
        if identity:  # empty: nothing beyond the options, and stage keys stay as they were without one
            out[b.column] = identity
    return out


def metric_context(cfg: RunConfig, prompts: Sequence[str] | None, with_tokenizer: bool) -> MetricContext:
    """The context a run's metrics get: the student's tokenizer, the student as default
    reference model, the run's system prompt and device, and ``score.metric_options``."""
    return MetricContext(
        tokenizer=load_tokenizer(cfg.student) if with_tokenizer else None,
        tokenizer_id=model_identity(cfg.student) if with_tokenizer else None,
        prompts=prompts,
        model_ref=cfg.student,
        system_prompt=cfg.system_prompt,
        device=cfg.device,
        metric_options=cfg.score.metric_options,
    )
