"""Score stage: every candidate gets every configured metric.

Scores go through the score cache (``heredity.metrics.cache``): a text already scored by the
same metric version, options and (where they matter) prompt, tokenizer and reference model is
not scored again, so re-scoring a pool, adding a metric or scoring the eval answers of an
unchanged student costs only what is new.

The stage streams: ``candidates.parquet`` is read in batches of ``BATCH_ROWS`` rows, each
batch is scored by :func:`score_batch` and appended to ``scores.parquet`` (a temp file renamed
into place at the end). Memory is one batch (its texts, their cache keys and values) plus the
metric's own state (a model, a tokenizer): it does not grow with the pool. Time grows linearly
with the pool: per candidate a cache key (a SHA-256 of the text) and a lookup per metric, and
the metric itself only for texts the cache has not seen — repeated texts (the same answer to
the same prompt from several samples) cost a lookup after their first batch, and are scored
once within a batch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from heredity.config import RunConfig
from heredity.core.models import load_tokenizer, model_identity
from heredity.core.rundir import Stage, iter_parquet, parquet_schema, parquet_writer
from heredity.errors import HeredityError
from heredity.metrics import BoundMetric, MetricContext, resolve_all
from heredity.metrics.cache import ScoreCache, open_cache, text_keys

MetricEntry = str | Mapping[str, Any] | BoundMetric

# Candidates per Ray Data pass when scoring on a cluster (see run_score).
RAY_BATCH_ROWS = 262_144

# What scores.parquet keeps of each candidate, before its metric columns.
CANDIDATE_COLUMNS = ("candidate_key", "prompt_id", "prompt", "teacher", "sample_index", "text", "finish_reason")


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
        if b.metric.identity is not None:
            out[b.column] = b.metric.identity(dict(b.options), b.context(context))
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


def nan_counts(scores: Mapping[str, Sequence[float]]) -> dict[str, int]:
    return {m: n for m, values in scores.items() if (n := sum(1 for v in values if math.isnan(v)))}


def run_score(cfg: RunConfig, run_dir: Path, generate: Stage) -> Stage:
    metrics = cfg.score.metrics
    options = cfg.score.metric_options
    # Only token-counting metrics need the student's tokenizer; without them a replayed pool
    # can be scored and selected with no model installed at all.
    with_tokenizer = needs_tokenizer(metrics, options)
    light = MetricContext(model_ref=cfg.student, system_prompt=cfg.system_prompt, device=cfg.device,
                          metric_options=options)
    key: dict[str, Any] = {
        "candidates": generate.key,
        "metrics": metric_versions(metrics, options),
        "tokenizer": model_identity(cfg.student) if with_tokenizer else None,
    }
    models = reference_models(metrics, light)
    if models:  # only then, so runs without model-based metrics keep their keys
        key["models"] = models
    stage = Stage(run_dir, "score", key)
    if stage.reuse():
        return stage
    stage.start()
    source = generate.dir / "candidates.parquet"
    candidates = parquet_schema(source)
    if missing := [c for c in CANDIDATE_COLUMNS if c not in candidates.names]:
        raise HeredityError(f"{source}: no column {', '.join(repr(c) for c in missing)}; "
                            "delete the generate folder to rebuild it")
    context = metric_context(cfg, None, with_tokenizer)
    store = open_cache(cfg.score.cache)
    hits, misses = (store.hits, store.misses) if store else (0, 0)
    # the candidates' own column types, then one float64 per metric
    schema = pa.schema([candidates.field(c) for c in CANDIDATE_COLUMNS] + [pa.field(m, pa.float64()) for m in metrics])
    total, nans = 0, dict.fromkeys(metrics, 0)
    if cfg.ray is None:
        bound, batch_rows = resolve_all(list(metrics), options), None
    else:  # same values and cache, computed on the cluster (metrics/ray_scoring.py)
        from heredity.metrics.ray_scoring import on_ray

        bound = on_ray(cfg.ray, metrics, options)
        # Each batch is one Ray Data pass, which starts its own actor pool (a model load per
        # replica): larger batches on the cluster amortise that; the driver still holds one batch.
        batch_rows = RAY_BATCH_ROWS
    with parquet_writer(stage.dir / "scores.parquet", schema) as writer:
        for batch in iter_parquet(source, columns=list(CANDIDATE_COLUMNS), batch_size=batch_rows):
            texts = batch.column("text").to_pylist()
            # prompts go to every metric, as they always have: a metric may read them
            # without declaring needs_prompts (the judge's rubric does)
            sub = replace(context, prompts=batch.column("prompt").to_pylist())
            scores = score_batch(texts, bound, sub, store)
            columns = [batch.column(c) for c in CANDIDATE_COLUMNS]
            columns += [pa.array(scores[m], type=pa.float64()) for m in metrics]
            writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
            total += batch.num_rows
            for m, n in nan_counts(scores).items():
                nans[m] += n
    counts: dict[str, Any] = {"candidates": total}
    if store:
        counts["cache"] = {"hits": store.hits - hits, "computed": store.misses - misses}
    if nans := {m: n for m, n in nans.items() if n}:
        counts["nan"] = nans
    if context.notes:
        counts["notes"] = context.notes
    stage.finish({"scores": "scores.parquet"}, counts=counts)
    return stage
