"""The profile stage of a run: the battery on base, each trained arm and (optionally) the
teachers.

``profile/<model>/`` holds ``summary.json`` (as ``heredity profile --out`` writes it), the
per-item Parquet files and, with harness tasks, ``lm_eval.json``. The key is the model's key
plus the profile settings, so a changed target re-profiles only the active arm. The paired
arm-vs-arm differences the report shows: :mod:`heredity.profile.differences`.

With ``ray:`` set, :func:`run_profiles_on_ray` profiles every model at once, one Ray task per
model; a task writes its files into a temporary folder on its own node and returns them, and
the driver writes them into the stage (``core.cluster``: workers compute, the driver writes).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from heredity.config import ProfileConfig, RunConfig
from heredity.core.cluster import fan_out, folder_files, write_files
from heredity.core.data import default_data_dir
from heredity.core.models import pick_device
from heredity.core.rundir import Stage, read_table, stable_hash, write_json
from heredity.profile import lm_eval_tasks, profile_model, resolve_suites


def eval_prompt_texts(run_dir: Path) -> list[str]:
    """The run's held-out eval prompts, as the prompts stage wrote them."""
    return [r["prompt"] for r in read_table(run_dir / "prompts" / "prompts.parquet") if r["split"] == "eval"]


def _options(pc: ProfileConfig, run_dir: Path) -> dict[str, dict[str, Any]]:
    toxicity: dict[str, Any] = {"samples_per_prompt": pc.samples_per_prompt}
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
    key["samples"] = key.pop("samples_per_prompt")  # its name in keys written before the rename
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



def _profile_on_worker(job: dict[str, Any]) -> tuple[dict[str, str], dict[str, int], dict[str, bytes]]:
    with tempfile.TemporaryDirectory(prefix="heredity-profile-") as tmp:
        outputs, counts = compute_profile(job, Path(tmp))
        return outputs, counts, folder_files(Path(tmp))


def run_profiles_on_ray(cfg: RunConfig, run_dir: Path, models: dict[str, tuple[str, str]]) -> dict[str, Stage]:
    """``profile/<name>`` for every ``name → (model reference, model key)``, one Ray task per model
    whose stage is not already done."""
    assert cfg.ray is not None
    stages = {name: profile_stage(cfg, run_dir, name, key) for name, (_, key) in models.items()}
    todo = [name for name, stage in stages.items() if not stage.reuse()]
    for name in todo:
        stages[name].start()
    jobs = {name: (_profile_on_worker, (profile_job(cfg, run_dir, models[name][0]),)) for name in todo}
    for name, (outputs, counts, files) in fan_out(cfg.ray, jobs, "profile"):
        write_files(stages[name].dir, files)
        stages[name].finish(outputs, counts=counts)
    return stages


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
