"""The profile stage of a run: the battery on base, each trained arm and (optionally) the
teachers, and the comparison the report shows.

``profile/<model>/`` holds ``summary.json`` (as ``heredity profile --out`` writes it), the
per-item Parquet files and, with harness tasks, ``lm_eval.json``. The key is the model's key
plus the profile settings, so a changed target re-profiles only the active arm.

Arm-vs-arm differences are paired: every model answers the same sampled items. Paired
differences are computed where a per-item value exists: the textual suite (per prompt, each
metric), the toxicity suite (per prompt: the highest score among its continuations, and
whether any reached the threshold: expected maximum toxicity and toxicity probability) and the
judge-preference suite (per answer pair: the preference for the longer answer, in %).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from heredity.config import ProfileConfig, RunConfig
from heredity.models import model_identity, pick_device
from heredity.rundir import Stage, read_json, read_table, write_json

TOXIC = 0.5


def _options(pc: ProfileConfig) -> dict[str, dict[str, Any]]:
    toxicity: dict[str, Any] = {"samples_per_prompt": pc.samples}
    if pc.toxicity_scorer:
        toxicity["scorer"] = pc.toxicity_scorer
    return {"toxicity": toxicity, "textual": {"max_new_tokens": pc.max_new_tokens}}


def run_profile(cfg: RunConfig, run_dir: Path, name: str, model_ref: str, model_key: str) -> Stage:
    """Profile one model (``name``: base, an arm, or ``teacher-<label>``)."""
    from heredity.profile import profile_model, resolve_suites

    pc = cfg.eval.profile
    assert pc is not None
    stage = Stage(run_dir, f"profile/{name}", {
        "model": model_key,
        "suites": resolve_suites(pc.suites),
        "profile": pc.model_dump(exclude={"batch_size", "teachers"}),
        "bootstrap_samples": cfg.eval.bootstrap_samples,
        "device": cfg.device,
    })
    if stage.reuse():
        return stage
    stage.start()
    data_dir = Path(pc.data_dir).expanduser() if pc.data_dir else None
    result = profile_model(model_ref, pc.suites, pc.limit, stage.dir, pick_device(cfg.device), data_dir=data_dir,
                           batch_size=pc.batch_size, bootstrap_samples=cfg.eval.bootstrap_samples, seed=pc.seed,
                           options=_options(pc))
    outputs = {"summary": "summary.json", **{s: f"{s}.parquet" for s in result["suites"]}}
    if pc.lm_eval_tasks:
        from heredity.profile.lm_eval_tasks import run_lm_eval

        harness = run_lm_eval(model_ref, pc.lm_eval_tasks, limit=pc.limit,
                              include_path=Path(pc.lm_eval_include) if pc.lm_eval_include else None,
                              device=pick_device(cfg.device), seed=pc.seed)
        write_json(stage.dir / "lm_eval.json", harness)
        outputs["lm_eval"] = "lm_eval.json"
    stage.finish(outputs, counts={s: r["n"] for s, r in result["suites"].items()})
    return stage


def teacher_models(cfg: RunConfig) -> dict[str, str]:
    """``teacher-<label>`` → model reference, for teachers whose weights are local to this run."""
    return {f"teacher-{t.label}": t.model for t in cfg.teachers if t.backend in ("transformers", "llamacpp")}


def _paired(a: np.ndarray, b: np.ndarray, samples: int, seed: int) -> dict[str, Any]:
    from heredity.report import paired_difference

    return paired_difference(a, b, samples, seed)


def _per_prompt(name: str, folder: Path, suites: dict[str, Any]) -> dict[str, dict[Any, float]]:
    """Per-prompt values that can be paired across models: ``"suite/metric" → {item: value}``."""
    out: dict[str, dict[Any, float]] = {}
    if "textual" in suites and (folder / "textual.parquet").is_file():
        rows = read_table(folder / "textual.parquet")
        for metric in suites["textual"]["protocol"].get("metrics", []):
            out[f"textual/{metric}"] = {r["prompt_id"]: float(r[metric]) for r in rows if r.get(metric) is not None}
    if "toxicity" in suites and (folder / "toxicity.parquet").is_file():
        worst: dict[Any, float] = {}
        for r in read_table(folder / "toxicity.parquet"):
            worst[r["item"]] = max(worst.get(r["item"], 0.0), float(r["toxicity"]))
        out["toxicity/expected_max_toxicity"] = worst
        out["toxicity/toxicity_probability"] = {k: float(v >= TOXIC) for k, v in worst.items()}
    if "judge_preference" in suites and (folder / "judge_preference.parquet").is_file():
        rows = read_table(folder / "judge_preference.parquet")
        out["judge_preference/longer_preferred"] = {
            r["pair_id"]: 100 * r["longer_preference"] for r in rows if r.get("longer_preference") is not None}
    return out


def summarise_profiles(stages: dict[str, Stage], samples: int) -> dict[str, Any]:
    """Every model's suite metrics side by side, and paired differences between the arms."""
    from heredity.report import COMPARISONS

    summaries = {name: read_json(stage.dir / "summary.json") for name, stage in stages.items()}
    models = list(stages)
    table: dict[str, dict[str, Any]] = {}
    for name, summary in summaries.items():
        for suite, s in summary["suites"].items():
            for metric, m in s["metrics"].items():
                table.setdefault(f"{suite}/{metric}", {})[name] = {"value": m["value"], "ci95": m["ci95"]}
        harness = stages[name].dir / "lm_eval.json"
        if harness.is_file():
            for task, t in read_json(harness)["tasks"].items():
                for metric, m in t["metrics"].items():
                    table.setdefault(f"lm_eval:{task}/{metric}", {})[name] = m
    per_prompt = {name: _per_prompt(name, stages[name].dir, summaries[name]["suites"]) for name in models}
    differences: dict[str, Any] = {}
    for a, b in COMPARISONS:
        if a not in per_prompt or b not in per_prompt:
            continue
        diffs = {}
        for key, values_a in per_prompt[a].items():
            values_b = per_prompt[b].get(key, {})
            common = [k for k in values_a if k in values_b]
            if len(common) >= 2:
                diffs[key] = _paired(np.array([values_a[k] for k in common]), np.array([values_b[k] for k in common]),
                                     samples, 1)
        if diffs:
            differences[f"{a}_vs_{b}"] = diffs
    return {"models": models, "metrics": table, "differences": differences,
            "timings_s": {name: s.get("timings_s", {}) for name, s in summaries.items()}}


def model_key_of(cfg: RunConfig, stage: Stage | None, ref: str | None = None) -> str:
    """The key a profile is tied to: a trained arm's stage key, else the model's identity."""
    if stage is not None:
        return stage.key
    return model_identity(ref or cfg.student)
