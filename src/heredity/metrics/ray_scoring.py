"""Metrics computed on Ray through Ray Data, value for value what a local run computes.

:func:`on_ray` wraps a run's metrics so that each call scores its texts on the cluster: a
``ray.data`` dataset of the texts (with their prompts where the metric reads them) goes
through ``map_batches``:

* a metric that loads a model (``Metric.loads_model``: toxicity, perplexity, reward, judge ...)
  runs in a pool of ``ray.replicas`` actors (``num_cpus``/``num_gpus_per_replica`` each), each
  keeping its model between batches;
* a cheap metric (lengths, lexical diversity, readability) runs in stateless tasks.

Each batch is scored by the metric itself (``BoundMetric.__call__``), the same call the local
path makes, so values do not depend on where they were computed. The wrapper is called by
``score_texts``' per-metric scoring, so the score cache works exactly as it does locally: the
driver looks texts up, sends only the misses to Ray and stores what comes back. Workers never
touch the cache or the run directory.

A lost worker or node costs time, not results: Ray Data restarts the pool's actors and reruns
their batches (its default ``max_restarts``/``max_task_retries`` of -1), and Ray reruns a lost
task (``max_retries``); the driver keeps one value per text, by its position, and fails in one
line if any is missing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from heredity.config import RayConfig
from heredity.core.cluster import ray_error_line, replica_resources, start_ray
from heredity.errors import HeredityError
from heredity.metrics.registry import BoundMetric, MetricContext, resolve_all

# Called on the driver after each batch arrives, with (column, rows so far, rows in all, the
# Ray node that scored the batch): the fault-injection tests stop a node mid-stage from here.
BATCH_OBSERVERS: list[Callable[[str, int, int, str], None]] = []


@dataclass(frozen=True)
class OnRay(BoundMetric):
    """A bound metric whose calls are computed on Ray (same column, version and cache namespace)."""

    ray: RayConfig | None = None

    def local(self) -> BoundMetric:
        return BoundMetric(self.metric, self.column, self.options)

    def __call__(self, texts: Sequence[str], context: MetricContext | None = None) -> list[float]:
        assert self.ray is not None
        return score_on_ray(self.ray, self.local(), texts, context or MetricContext())


def on_ray(rc: RayConfig, metrics: Sequence[Any], options: Mapping[str, Mapping[str, Any]] | None = None
           ) -> list[BoundMetric]:
    """``metrics`` (config entries or bound metrics) resolved, each computed on Ray when called."""
    return [OnRay(b.metric, b.column, b.options, ray=rc) for b in resolve_all(list(metrics), options or {})]


def _score_batch(batch: dict[str, Any], bound: BoundMetric, context: MetricContext) -> dict[str, Any]:
    """One batch, on a worker: the metric's own call, plus the notes it made (JSON, first row)."""
    import numpy as np
    import ray

    texts = [str(t) for t in batch["text"]]
    prompts = [str(p) for p in batch["prompt"]] if bound.metric.needs_prompts else None
    ctx = replace(context, prompts=prompts, notes={})
    values = bound(texts, ctx)
    notes = np.full(len(texts), "", dtype=object)
    if ctx.notes and len(texts):
        notes[0] = json.dumps(ctx.notes)
    node = np.full(len(texts), ray.get_runtime_context().get_node_id(), dtype=object)
    return {"row": np.asarray(batch["row"], dtype=np.int64), "value": np.asarray(values, dtype=np.float64),
            "notes": notes, "node": node}


class _Replica:
    """A Ray Data actor: the metric (and the model it loads on first use) kept across batches."""

    def __init__(self, bound: BoundMetric, context: MetricContext):
        self.bound, self.context = bound, context

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return _score_batch(batch, self.bound, self.context)


def _merge_notes(into: dict[str, Any], notes: Mapping[str, Any]) -> None:
    """Counts add up across batches (as one local call would have counted them)."""
    for key, value in notes.items():
        if isinstance(value, (int, float)) and isinstance(into.get(key, 0), (int, float)):
            into[key] = into.get(key, 0) + value
        else:
            into[key] = value


def score_on_ray(rc: RayConfig, bound: BoundMetric, texts: Sequence[str], context: MetricContext) -> list[float]:
    """``bound(texts, context)``, computed in batches of ``rc.batch_size`` on Ray."""
    if not texts:
        return []
    ray = start_ray(rc)
    import ray.data  # noqa: F401  (a submodule: ``ray`` alone does not load it)

    prompts = context.prompts if bound.metric.needs_prompts else None
    items = [{"row": i, "text": t, "prompt": "" if prompts is None else prompts[i]} for i, t in enumerate(texts)]
    blocks = max(1, math.ceil(len(items) / rc.batch_size))
    dataset = ray.data.from_items(items, override_num_blocks=blocks)
    # The texts travel in the dataset; the context (tokenizer, options, device) once per worker.
    shipped = replace(context, prompts=None, notes={})
    common: dict[str, Any] = {"batch_size": rc.batch_size, "batch_format": "numpy"}
    # Retries are Ray Data's own: a pool's actor lost with its node restarts and its batches
    # rerun (max_restarts / max_task_retries = -1), a lost task reruns (Ray's max_retries).
    if bound.metric.loads_model:
        pool = ray.data.ActorPoolStrategy(size=min(rc.replicas, blocks))
        scored = dataset.map_batches(_Replica, fn_constructor_kwargs={"bound": bound, "context": shipped},
                                     compute=pool, **common, **replica_resources(rc))
    else:
        scored = dataset.map_batches(_score_batch, fn_kwargs={"bound": bound, "context": shipped}, **common,
                                     **replica_resources(rc, gpus=False))
    values: list[float | None] = [None] * len(texts)
    done = repeated = batches = 0
    nodes: set[str] = set()
    try:
        for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
            for row, value in zip(batch["row"], batch["value"]):
                if values[int(row)] is not None:
                    repeated += 1
                    continue
                values[int(row)] = float(value)
                done += 1
            for note in batch["notes"]:
                if note:
                    _merge_notes(context.notes, json.loads(note))
            batches += 1
            node = str(batch["node"][0]) if len(batch["node"]) else ""
            nodes.add(node)
            for observe in BATCH_OBSERVERS:
                observe(bound.column, done, len(texts), node)
    except HeredityError:
        raise
    except Exception as exc:  # a metric's error arrives wrapped by Ray Data; report its own line
        raise HeredityError(f"metric '{bound.column}' on Ray: {ray_error_line(exc)}") from None
    lost = sum(1 for v in values if v is None)
    if lost:
        raise HeredityError(f"metric '{bound.column}' on Ray: {lost} of {len(texts)} texts came back without a "
                            "score; rerun the stage")
    # Where the work went; rows Ray delivered twice (a batch rerun after its first result had
    # arrived) were kept once. The score stage makes one pass per Parquet batch, sharing these
    # notes, so the figures add up over passes (nodes: the most that one pass used).
    entry = context.notes.setdefault("ray", {}).setdefault(
        bound.column, {"batches": 0, "nodes": 0, "repeated_rows": 0})
    entry["batches"] += batches
    entry["repeated_rows"] += repeated
    entry["nodes"] = max(entry["nodes"], len(nodes))
    return [v for v in values if v is not None]
