"""Train stage: supervised fine-tuning of the student on each arm's selected data.

Every arm gets the same hyper-parameters, seed and number of optimiser steps; only the data
differs (arms of different sizes all take the largest arm's step count, see
``plan_equal_steps``). The manifest's result records the hyper-parameters the trainer actually
used and the steps taken, so that claim can be checked after the fact. The trainer itself,
its checkpoints, measurements and the multi-process launcher live in ``heredity.training``.

Training checkpoints every ``save_steps`` optimiser steps into ``train/<arm>/checkpoints/``.
A rerun of the same stage (same key) after a crash or kill resumes from the newest complete
checkpoint and ends at the same global step as an uninterrupted run; the checkpoints are
deleted once the stage's manifest is written, because a full checkpoint (weights plus
optimiser state) is about three times the model's size.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from heredity.config import RunConfig
from heredity.core.models import load_tokenizer, model_identity, pick_device
from heredity.core.rundir import Stage, read_table, write_table
from heredity.training.distributed import train_distributed
from heredity.training.sft import train_student
from heredity.training.steps import (
    optimiser_steps,
    train_key,
    training_sequences,
    world_size,
)
from heredity.training.telemetry import plot_loss


def plan_equal_steps(cfg: RunConfig, run_dir: Path, select: Stage, arms: tuple[str, ...] | list[str]
                     ) -> dict[str, Any] | None:
    """Give every arm the same number of optimiser steps: the largest arm's.

    Arms of different sizes (a threshold that drops prompts, packing that makes more sequences
    of longer answers) would otherwise take different numbers of steps under the same
    ``epochs``, and the students would differ by training length as well as by data. Returns
    ``None`` when ``train.max_steps`` is set or every arm already takes the same steps (their
    stage keys then stay what they were), else ``{"max_steps": N, "arms": {arm: own steps}}``.
    The plan is itself a small cached stage, so a rerun does not tokenise the data again.
    """
    tc = cfg.train
    if tc.max_steps is not None:
        return None
    hashes = (select.manifest() or {}).get("data_hashes", {})
    stage = Stage(run_dir, "train/steps", {
        "data": {arm: hashes.get(arm) for arm in arms},
        "student": model_identity(cfg.student),
        "system_prompt": cfg.system_prompt,
        "train": train_key(tc),
    })
    if not stage.reuse():
        stage.start()
        tokenizer = load_tokenizer(cfg.student, padding_side="right")
        own = {arm: optimiser_steps(training_sequences(tokenizer, read_table(select.dir / f"{arm}.parquet"), tc,
                                                       cfg.system_prompt), tc, world_size(tc))
               for arm in arms}
        stage.finish({}, steps=own)
    own = stage.manifest()["steps"]
    if len(set(own.values())) <= 1:
        return None
    return {"max_steps": max(own.values()), "arms": own}


def run_train(cfg: RunConfig, run_dir: Path, select: Stage, arm: str, plan: dict[str, Any] | None = None) -> Stage:
    """Train one arm. ``plan`` (from ``plan_equal_steps``) sets the arm's optimiser steps to
    the largest arm's; the manifest then records the plan beside the steps taken."""
    tc = cfg.train if plan is None else cfg.train.model_copy(update={"max_steps": plan["max_steps"]})
    data_hash = (select.manifest() or {}).get("data_hashes", {}).get(arm)
    stage = Stage(run_dir, f"train/{arm}", {
        "data": data_hash,
        "student": model_identity(cfg.student),
        "system_prompt": cfg.system_prompt,
        "train": train_key(tc),
        "device": cfg.device,
    })
    if stage.reuse():
        return stage
    stage.start()
    checkpoints = stage.dir / "checkpoints"
    if world_size(tc) > 1:
        info = train_distributed(cfg.student, select.dir / f"{arm}.parquet", tc, cfg.system_prompt,
                                 pick_device(cfg.device), stage.dir / "model", checkpoints, stage.key)
    else:
        rows = read_table(select.dir / f"{arm}.parquet")
        info = train_student(cfg.student, rows, tc, cfg.system_prompt, pick_device(cfg.device),
                             stage.dir / "model", checkpoints, resume_key=stage.key, cleanup_checkpoints=False)
    info["equal_steps"] = ({"max_steps": plan["max_steps"], "own_steps_by_arm": plan["arms"],
                            "why": "arms of different sizes: every arm takes the largest arm's step count"}
                           if plan is not None else None)
    log = info.pop("log")
    keys = sorted({k for e in log for k in e})
    write_table(stage.dir / "train_log.parquet", [{k: e.get(k) for k in keys} for e in log])
    plot_loss(log, stage.dir / "loss.png", f"train/{arm}: loss per step")
    stage.finish({"model": "model", "log": "train_log.parquet", "loss_plot": "loss.png"}, result=info)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return stage


def run_train_arms(cfg: RunConfig, run_dir: Path, select: Stage, arms: tuple[str, ...] | list[str],
                   step=lambda name, make: make()) -> dict[str, Stage]:
    """Train every arm with the same settings and the same number of optimiser steps.
    ``step(name, make)`` wraps each arm's training (the pipeline's timer and progress)."""
    plan = plan_equal_steps(cfg, run_dir, select, arms)
    return {arm: step(f"train/{arm}", lambda arm=arm: run_train(cfg, run_dir, select, arm, plan)) for arm in arms}
