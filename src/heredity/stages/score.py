"""Score stage: every candidate gets every configured metric.

Scores go through the score cache (:mod:`heredity.metrics.scoring`, over
``heredity.metrics.cache``): a text already scored by the same metric version, options and
(where they matter) prompt, tokenizer and reference model is not scored again, so re-scoring a
pool or adding a metric costs only what is new.

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

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from heredity.config import RunConfig
from heredity.core.models import model_identity
from heredity.core.rundir import Stage, iter_parquet, parquet_schema, parquet_writer
from heredity.errors import HeredityError
from heredity.metrics import resolve_all
from heredity.metrics.cache import open_cache
from heredity.metrics.scoring import metric_context, metric_versions, needs_tokenizer, reference_models, score_batch

# Candidates per Ray Data pass when scoring on a cluster (see run_score).
RAY_BATCH_ROWS = 262_144

# What scores.parquet keeps of each candidate, before its metric columns.
CANDIDATE_COLUMNS = ("candidate_key", "prompt_id", "prompt", "teacher", "sample_index", "text", "finish_reason")


def nan_counts(scores: Mapping[str, Sequence[float]]) -> dict[str, int]:
    return {m: n for m, values in scores.items() if (n := sum(1 for v in values if math.isnan(v)))}


def run_score(cfg: RunConfig, run_dir: Path, generate: Stage) -> Stage:
    metrics = cfg.score.metrics
    options = cfg.score.metric_options
    # Only token-counting metrics need the student's tokenizer; without them a replayed pool
    # can be scored and selected with no model installed at all.
    with_tokenizer = needs_tokenizer(metrics, options)
    light = metric_context(cfg, None, with_tokenizer=False)
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
