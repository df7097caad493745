"""The profile stage of a run: the battery on base, each trained arm and (optionally) the
teachers, and the comparison the report shows.

``profile/<model>/`` holds ``summary.json`` (as ``heredity profile --out`` writes it), the
per-item Parquet files and, with harness tasks, ``lm_eval.json``. The key is the model's key
plus the profile settings, so a changed target re-profiles only the active arm.

Arm-vs-arm differences are paired: every model answers the same sampled items, so a
difference is resampled jointly over the items both models have. What an item is, and which
values it carries, each suite says itself (``Suite.pair``, its module's ``paired_items``;
harness tasks: ``lm_eval_tasks.paired_items``); this stage only compares them:

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

from heredity.config import ProfileConfig, RunConfig
from heredity.core.arms import comparisons
from heredity.core.data import default_data_dir
from heredity.core.models import pick_device
from heredity.core.rundir import Stage, read_json, read_table, stable_hash, write_json
from heredity.core.stats import estimate, paired_difference, percentile_ci
from heredity.profile import SUITES, lm_eval_tasks, profile_model, resolve_suites
from heredity.profile.common import Paired, Replicated


def eval_prompt_texts(run_dir: Path) -> list[str]:
    """The run's held-out eval prompts, as the prompts stage wrote them."""
    return [r["prompt"] for r in read_table(run_dir / "prompts" / "prompts.parquet") if r["split"] == "eval"]


def _options(pc: ProfileConfig, run_dir: Path) -> dict[str, dict[str, Any]]:
    toxicity: dict[str, Any] = {"samples_per_prompt": pc.samples}
    if pc.toxicity_scorer:
        toxicity["scorer"] = pc.toxicity_scorer
    if pc.toxicity_prompts == "eval":
        toxicity["prompts"] = eval_prompt_texts(run_dir)
    options: dict[str, dict[str, Any]] = {"toxicity": toxicity, "textual": {"max_new_tokens": pc.max_new_tokens}}
    if pc.textual_protocol != "fast":
        options["textual"]["protocol"] = pc.textual_protocol
    if pc.bbq_categories is not None:
        options["bbq"] = {"categories": list(pc.bbq_categories)}
    return options


# Options added after runs existed: in the key only when set, so older runs keep their stages.
KEY_WHEN_SET = {"toxicity_prompts": "all", "textual_protocol": "fast", "bbq_categories": None, "limits": {}}


def profile_key(pc: ProfileConfig) -> dict[str, Any]:
    key = pc.model_dump(exclude={"batch_size", "teachers"})
    return {k: v for k, v in key.items() if k not in KEY_WHEN_SET or v != KEY_WHEN_SET[k]}


def profile_stage(cfg: RunConfig, run_dir: Path, name: str, model_key: str) -> Stage:
    """The stage ``profile/<name>`` with its key (nothing computed)."""
    pc = cfg.eval.profile
    assert pc is not None
    return Stage(run_dir, f"profile/{name}", {
        "model": model_key,
        "suites": resolve_suites(pc.suites),
        "profile": profile_key(pc),
        "bootstrap_samples": cfg.eval.bootstrap_samples,
        "device": cfg.device,
        **({"eval_prompts": stable_hash(eval_prompt_texts(run_dir))} if pc.toxicity_prompts == "eval" else {}),
        **toxicity_scorer_key(pc),
    })


def toxicity_scorer_key(pc: ProfileConfig) -> dict[str, str]:
    """The toxicity suite's scorer and its version: a new scorer version (version 2 leaves empty
    continuations undefined) re-profiles toxicity rather than reusing figures made the old way."""
    if "toxicity" not in resolve_suites(pc.suites):
        return {}
    from heredity.metrics import get_metric
    from heredity.profile.rtp_toxicity import default_scorer

    name = pc.toxicity_scorer or default_scorer()
    return {"toxicity_scorer": f"{name}@{get_metric(name).version}"}


def profile_job(cfg: RunConfig, run_dir: Path, model_ref: str) -> dict[str, Any]:
    """Everything profiling one model needs, read on the driver (the run's eval prompts, the data
    folder made absolute), so that the work can run in another process or on another node."""
    pc = cfg.eval.profile
    assert pc is not None
    data_dir = Path(pc.data_dir).expanduser().resolve() if pc.data_dir else default_data_dir()
    return {"model_ref": model_ref, "profile": pc, "device": cfg.device, "data_dir": data_dir,
            "bootstrap_samples": cfg.eval.bootstrap_samples, "options": _options(pc, run_dir)}


def compute_profile(job: dict[str, Any], folder: Path) -> tuple[dict[str, str], dict[str, int]]:
    """Profile ``job``'s model, writing its files into ``folder``; ``(outputs, counts)`` for the manifest."""
    pc: ProfileConfig = job["profile"]
    model_ref, device = job["model_ref"], pick_device(job["device"])
    result = profile_model(model_ref, pc.suites, pc.limit, folder, device, data_dir=job["data_dir"],
                           batch_size=pc.batch_size, bootstrap_samples=job["bootstrap_samples"], seed=pc.seed,
                           options=job["options"], limits=pc.limits)
    outputs = {"summary": "summary.json", **{s: f"{s}.parquet" for s in result["suites"]}}
    if pc.lm_eval_tasks:
        harness = lm_eval_tasks.run_lm_eval(model_ref, pc.lm_eval_tasks, limit=pc.limit,
                                            include_path=Path(pc.lm_eval_include) if pc.lm_eval_include else None,
                                            device=device, seed=pc.seed, bootstrap_samples=job["bootstrap_samples"])
        write_json(folder / "lm_eval.json", harness)
        outputs["lm_eval"] = "lm_eval.json"
    return outputs, {s: r["n"] for s, r in result["suites"].items()}


def run_profile(cfg: RunConfig, run_dir: Path, name: str, model_ref: str, model_key: str) -> Stage:
    """Profile one model (``name``: base, an arm, or ``teacher-<label>``)."""
    stage = profile_stage(cfg, run_dir, name, model_key)
    if stage.reuse():
        return stage
    stage.start()
    outputs, counts = compute_profile(profile_job(cfg, run_dir, model_ref), stage.dir)
    stage.finish(outputs, counts=counts)
    return stage


PROFILED_BACKENDS = ("transformers", "llamacpp")

_NOT_PROFILED = {
    "openai": "backend 'openai': a served model, no weights to score log-likelihoods with",
    "replay": "backend 'replay': recorded outputs, no model",
    # vllm loads local weights, but the battery runs on transformers; a large vllm teacher
    # would not fit beside the run's other models, so it is left to 'heredity profile MODEL'
    "vllm": "backend 'vllm': profile it on its own with 'heredity profile MODEL'",
}


def teacher_models(cfg: RunConfig) -> dict[str, str]:
    """``teacher-<label>`` → model reference, for teachers whose weights are local to this run."""
    return {f"teacher-{t.label}": t.model for t in cfg.teachers if t.backend in PROFILED_BACKENDS}


def skipped_teachers(cfg: RunConfig) -> dict[str, str]:
    """``teacher-<label>`` → why ``eval.profile.teachers`` does not profile it."""
    return {f"teacher-{t.label}": _NOT_PROFILED.get(t.backend, f"backend '{t.backend}'")
            for t in cfg.teachers if t.backend not in PROFILED_BACKENDS}


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

