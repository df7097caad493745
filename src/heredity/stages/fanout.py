"""Evaluate, profile and judge over Ray: one model (or comparison) per Ray task, all at once.

With ``ray:`` set, the pipeline hands every model that an evaluate or profile stage needs
(base, each trained arm, the teachers) to :func:`heredity.core.cluster.fan_out`, one task
each with one replica's resources (``ray.num_cpus_per_replica``/``num_gpus_per_replica``),
so profiling base, every arm and the teachers takes about as long as the slowest of them,
given a replica's worth of resources per model.

Workers compute; the driver writes. A profile task writes its files into a temporary folder
on its own node and returns them; an evaluate task returns its answers, which the driver
scores (through the score cache) and writes. The driver finishes each stage as its task
comes back, so a stage is written once whatever Ray reran, and a run stopped midway reuses
the stages that finished.

What workers read: the models. A trained arm is read from the run directory
(``train/<arm>/model``), so on a multi-node cluster the run directory must be on a file system
every node mounts; the profile data folder must be at the same path on every node.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from heredity.config import JudgeConfig, RunConfig
from heredity.core.cluster import fan_out, folder_files, write_files
from heredity.core.prompts import Prompt
from heredity.core.rundir import Stage
from heredity.judging import Pair, pairwise
from heredity.stages.evaluate import answer, earlier_answers, evaluate_stage, finish_evaluate
from heredity.stages.judge import JUDGE_OUTPUTS, answer_pairs, judge_stage
from heredity.stages.profile import compute_profile, profile_job, profile_stage


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


def run_evaluations_on_ray(cfg: RunConfig, run_dir: Path, eval_prompts: list[Prompt],
                           models: dict[str, Stage | None]) -> dict[str, Stage]:
    """``evaluate/<arm>`` for every ``arm → trained stage`` (None: the base student), one Ray task
    per arm whose stage is not already done; answers are scored and written here."""
    assert cfg.ray is not None
    stages, refs = {}, {}
    for arm, model_stage in models.items():
        stages[arm], refs[arm] = evaluate_stage(cfg, run_dir, arm, eval_prompts, model_stage)
    todo = [arm for arm, stage in stages.items() if not stage.reuse()]
    earlier = {arm: earlier_answers(stages[arm]) for arm in todo}
    for arm in todo:
        stages[arm].start()
        found = earlier[arm]
        if found is not None:  # only a metric changed: re-score here, generate nothing
            finish_evaluate(cfg, stages[arm], arm, found.rows, found)
    jobs = {arm: (answer, (refs[arm], eval_prompts, cfg)) for arm in todo if earlier[arm] is None}
    for arm, rows in fan_out(cfg.ray, jobs, "evaluate"):
        finish_evaluate(cfg, stages[arm], arm, rows)
    return stages


def _judge_on_worker(jc: JudgeConfig, pairs: list[Pair]) -> tuple[int, dict[str, bytes]]:
    with tempfile.TemporaryDirectory(prefix="heredity-judge-") as tmp:
        result = pairwise(jc, pairs, jc, out=Path(tmp))
        return result.summary["pairs"], folder_files(Path(tmp))


def run_judges_on_ray(cfg: RunConfig, run_dir: Path, eval_stages: dict[str, Stage],
                      comparisons: list[tuple[str, str]]) -> dict[str, Stage]:
    """``judge/<a>_vs_<b>`` for every comparison, one Ray task each (its own copy of a local judge
    model, or its own client of an API judge) for those not already done."""
    assert cfg.ray is not None
    stages, jobs = {}, {}
    for a, b in comparisons:
        name = f"{a}_vs_{b}"
        stages[name], jc = judge_stage(cfg, run_dir, eval_stages, a, b)
        if not stages[name].reuse():
            stages[name].start()
            jobs[name] = (_judge_on_worker, (jc, answer_pairs(eval_stages, a, b)))
    for name, (pairs, files) in fan_out(cfg.ray, jobs, "judge"):
        write_files(stages[name].dir, files)
        stages[name].finish(JUDGE_OUTPUTS, counts={"pairs": pairs})
    return stages
