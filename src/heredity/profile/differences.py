"""Arm-vs-arm differences of profiles: every model's suite figures side by side, and paired
differences between the arms of a run (what a run's report shows of its profile stages).

Differences are paired: every model answers the same sampled items, so a difference is
resampled jointly over the items both models have. What an item is, and which values it
carries, each suite says itself (``Suite.pair``, its module's ``paired_items``; harness tasks:
``lm_eval_tasks.paired_items``); this module only compares them:

* means of per-item values, by ``core.stats.paired_difference``: textual (per prompt, each metric),
  toxicity (per prompt: the highest score among its continuations, and whether any reached the
  threshold), judge_preference (per answer pair: the preference for the longer answer, in %),
  calibration (per item: correct, confidence, correct by summed log-likelihood), crows_pairs (per
  pair: the more stereotyping sentence preferred, overall and per direction), stereoset (per
  item: the ss and lms indicators), bbq (per item: correct, overall and per context condition)
  and seat (per test: |effect size|, p < 0.05);
* figures of a whole sample, by recomputing them on both models for each joint resample
  (``_paired_statistic``): calibration's ECE (1 and 10 bins), stereoset's ICAT and BBQ's two bias
  scores. A BBQ bias score is undefined when a model chose only "unknown" on the items; the
  difference is then None with a ``note`` saying for which model;
* SEAT's effect size per test (``seat/effect_size:<test>``): one figure per model, whose
  bootstrap resamples of the test's sentence sets are drawn with the same indices for every
  model (``seat.resample_seed``), so the CI is that of the resample-by-resample differences.

Per-group figures (bias types, BBQ categories) are not paired; the report shows overall figures.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from heredity.core.arms import comparisons
from heredity.core.rundir import Stage, read_json, read_table
from heredity.core.stats import estimate, paired_difference, percentile_ci
from heredity.profile import SUITES, lm_eval_tasks
from heredity.profile.common import Paired, Replicated


def _paired_statistic(stat: Callable[[np.ndarray], float | None], a: np.ndarray, b: np.ndarray, samples: int,
                      seed: int) -> dict[str, Any]:
    """``stat(a) - stat(b)`` with a CI from joint item resamples.

    For figures of a whole sample (ECE, ICAT, a BBQ bias score) there is no per-item difference
    to average, so each resample draws the same items for both models and recomputes the figure
    on each. Resamples where either figure is undefined are dropped (``bootstrap_ci``).
    """
    def diff(i: np.ndarray) -> float | None:
        x, y = stat(a[i]), stat(b[i])
        return None if x is None or y is None else x - y

    e = estimate(diff, len(a), samples, seed)
    return {"diff": e["value"], "ci95": e["ci95"], "ratio": None}


def _per_prompt(folder: Path, suites: dict[str, Any]) -> dict[str, Paired | Replicated]:
    """Per-item values that can be paired across models: ``"suite/metric" → Paired`` (or ``Replicated``).

    ``suites``: the profile's ``summary.json`` suites; each one with a ``Suite.pair`` and a
    Parquet file contributes, in registry order, then the harness tasks (paired by document).
    """
    out: dict[str, Paired | Replicated] = {}
    for name, spec in SUITES.items():
        if spec.pair is not None and name in suites and (folder / f"{name}.parquet").is_file():
            out.update(spec.pair(read_table(folder / f"{name}.parquet"), suites[name]))
    if (folder / "lm_eval.json").is_file():
        out.update(lm_eval_tasks.paired_items(read_json(folder / "lm_eval.json")))
    return out


def _replicated_difference(pa: Replicated, pb: Replicated, a: str, b: str) -> dict[str, Any]:
    """a − b, with the percentile CI of the replicate-by-replicate differences."""
    out: dict[str, Any] = {"diff": pa.value - pb.value, "ci95": [None, None], "ratio": None, "n": 1}
    if pa.seed != pb.seed or len(pa.boot) != len(pb.boot):
        out["note"] = f"not paired: {a} and {b} drew different resamples (other seed or count)"
        return out
    out["ci95"] = percentile_ci(pa.boot - pb.boot, len(pa.boot))
    return out


def _difference(pa: Paired | Replicated, pb: Paired | Replicated, a: str, b: str, samples: int
                ) -> dict[str, Any] | None:
    """a − b on the items both models have, or None with fewer than two such items."""
    if isinstance(pa, Replicated) and isinstance(pb, Replicated):
        return _replicated_difference(pa, pb, a, b)
    if isinstance(pa, Replicated) or isinstance(pb, Replicated):
        return None
    common = [k for k in pa.values if k in pb.values]
    if len(common) < 2:
        return None
    va = np.array([pa.values[k] for k in common], dtype=float)
    vb = np.array([pb.values[k] for k in common], dtype=float)
    if pa.stat is None:
        out = paired_difference(va, vb, samples, 1)
    else:
        out = _paired_statistic(pa.stat, va, vb, samples, 1)
        undefined = [m for m, v in ((a, va), (b, vb)) if pa.stat(v) is None]
        if undefined:
            out["note"] = f"undefined for {' and '.join(undefined)} on these items"
    out["n"] = len(common)
    return out


def summarise_profiles(stages: dict[str, Stage], samples: int, skipped: dict[str, str] | None = None,
                       variants: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Every model's suite metrics side by side, and paired differences between the arms.

    ``skipped``: models asked for but not profiled (teachers without local weights), with why.
    ``variants``: the run's extra steered arms (``select.variants``), compared like ``active``.
    """
    summaries = {name: read_json(stage.dir / "summary.json") for name, stage in stages.items()}
    models = list(stages)
    table: dict[str, dict[str, Any]] = {}
    for name, summary in summaries.items():
        for suite, s in summary["suites"].items():
            for metric, m in s["metrics"].items():
                table.setdefault(f"{suite}/{metric}", {})[name] = {"value": m["value"], "ci95": m["ci95"]}
            if suite == "seat":  # a SEAT test is a benchmark of its own: show each one's effect size
                for test, g in s["groups"].items():
                    m = g["metrics"]["effect_size"]
                    table.setdefault(f"seat/effect_size:{test}", {})[name] = {"value": m["value"], "ci95": m["ci95"]}
        harness = stages[name].dir / "lm_eval.json"
        if harness.is_file():
            for task, t in read_json(harness)["tasks"].items():
                for metric, m in t["metrics"].items():
                    table.setdefault(f"lm_eval:{task}/{metric}", {})[name] = m
    per_prompt = {name: _per_prompt(stages[name].dir, summaries[name]["suites"]) for name in models}
    differences: dict[str, Any] = {}
    for a, b in comparisons(variants):
        if a not in per_prompt or b not in per_prompt:
            continue
        diffs = {}
        for key, pa in per_prompt[a].items():
            if key in per_prompt[b] and (d := _difference(pa, per_prompt[b][key], a, b, samples)) is not None:
                diffs[key] = d
        if diffs:
            differences[f"{a}_vs_{b}"] = diffs
    return {"models": models, "skipped": dict(skipped or {}), "metrics": table, "differences": differences,
            "timings_s": {name: s.get("timings_s", {}) for name, s in summaries.items()}}

