"""The ``judge/<a>_vs_<b>`` stages of a run (``eval.judge``): the judge compares two arms'
held-out answers pairwise (:mod:`heredity.judging`); which arms, ``core.arms.judged_comparisons``.

With ``ray:`` set, :func:`run_judges_on_ray` runs every comparison at once, one Ray task each;
a task judges into a temporary folder and returns its files, which the driver writes into the
stage (``core.cluster``: workers compute, the driver writes)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from heredity.config import PRICE_FIELDS, JudgeConfig, RunConfig
from heredity.core.cluster import fan_out, folder_files, write_files
from heredity.core.http import public_url
from heredity.core.rundir import Stage, read_table
from heredity.judging import Pair, judge_config, pairwise


def run_judge(cfg: RunConfig, run_dir: Path, eval_stages: dict[str, Stage], a: str, b: str) -> Stage:
    """The ``judge/<a>_vs_<b>`` stage: the judge compares two arms' held-out answers.

    Keyed by both evaluate stages' keys and the judge config, so a new target re-judges only
    comparisons that involve the active arm.
    """
    stage, jc = judge_stage(cfg, run_dir, eval_stages, a, b)
    if stage.reuse():
        return stage
    stage.start()
    result = pairwise(jc, answer_pairs(eval_stages, a, b), jc, out=stage.dir)
    stage.finish(JUDGE_OUTPUTS, counts={"pairs": result.summary["pairs"]})
    return stage


# What a judge stage writes (pairwise's files).
JUDGE_OUTPUTS = {"judgments": "judgments.parquet", "summary": "summary.json"}


def judge_stage(cfg: RunConfig, run_dir: Path, eval_stages: dict[str, Stage], a: str,
                b: str) -> tuple[Stage, JudgeConfig]:
    """The stage ``judge/<a>_vs_<b>`` with its key, and the judge's config (nothing computed)."""
    jc = judge_config(cfg.eval.judge, device=cfg.device, bootstrap_samples=cfg.eval.bootstrap_samples)
    stage = Stage(run_dir, f"judge/{a}_vs_{b}", {"a": eval_stages[a].key, "b": eval_stages[b].key,
                                                 "judge": judge_key(jc)})
    return stage, jc


def answer_pairs(eval_stages: dict[str, Stage], a: str, b: str) -> list[Pair]:
    """Arm a's and arm b's answers to each held-out prompt both answered."""
    answers_b = {r["prompt_id"]: r for r in read_table(eval_stages[b].dir / "answers.parquet")}
    return [Pair(pair_id=str(r["prompt_id"]), instruction=r["prompt"], answer_a=r["text"],
                 answer_b=answers_b[r["prompt_id"]]["text"], model_a=a, model_b=b)
            for r in read_table(eval_stages[a].dir / "answers.parquet") if r["prompt_id"] in answers_b]


def judge_key(jc: JudgeConfig) -> dict[str, Any]:
    """The judge settings that change verdicts, as a judge stage's key holds them."""
    settings = jc.model_dump(mode="json", exclude={"bootstrap_samples": True, "device": True,
                                                   "model": set(PRICE_FIELDS)})
    # keys written before JudgeConfig.judge was renamed 'model' name it 'judge'; keeping that
    # name keeps those runs' judge stages reusable
    settings["judge"] = settings.pop("model")
    openai = settings["judge"].get("openai")
    if openai:
        openai["base_url"] = public_url(openai["base_url"])  # the key is written to the manifest: no credentials
        # a check changes no verdict; options added later stay out of the key at their defaults,
        # so judge stages written before them are reused
        del openai["check_model"]
        if not openai["extra_body"]:
            del openai["extra_body"]
    return settings



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
