"""Train stage: supervised fine-tuning of the student on each arm's selected data, and preference
training (DPO and TRL's other losses) of the ``select.preference`` arms on their pairs.

Every arm gets the same hyper-parameters, seed and number of optimiser steps; only the data
(and a preference arm's objective) differs (arms of different sizes all take the largest arm's
step count, see ``plan_equal_steps``; a preference arm takes the SFT arms', ``preference_plan``). The manifest's result records the hyper-parameters the trainer actually
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
from heredity.core.rundir import Stage, read_parquet, read_table, write_table
from heredity.training.checkpoints import prepare_checkpoints
from heredity.training.distributed import train_distributed
from heredity.training.dpo import train_preference
from heredity.training.fit import Tracking
from heredity.training.sft import train_student
from heredity.training.steps import (
    optimiser_steps,
    split_validation,
    train_key,
    training_sequences,
    world_size,
)
from heredity.training.telemetry import plot_loss


def own_steps(cfg: RunConfig, run_dir: Path, select: Stage, arms: tuple[str, ...] | list[str]) -> dict[str, int]:
    """The optimiser steps ``epochs`` alone gives each SFT arm (TRL's count, after tokenising). A
    small cached stage, so a rerun does not tokenise the data again."""
    tc = cfg.train
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
    return stage.manifest()["steps"]


def plan_equal_steps(cfg: RunConfig, run_dir: Path, select: Stage, arms: tuple[str, ...] | list[str]
                     ) -> dict[str, Any] | None:
    """Give every SFT arm the same number of optimiser steps: the largest arm's.

    Arms of different sizes (a threshold that drops prompts, packing that makes more sequences
    of longer answers) would otherwise take different numbers of steps under the same
    ``epochs``, and the students would differ by training length as well as by data. Returns
    ``None`` when ``train.max_steps`` is set or every arm already takes the same steps (their
    stage keys then stay what they were), else ``{"max_steps": N, "arms": {arm: own steps}}``.
    """
    if cfg.train.max_steps is not None:
        return None
    own = own_steps(cfg, run_dir, select, arms)
    if len(set(own.values())) <= 1:
        return None
    return {"max_steps": max(own.values()), "arms": own}


def preference_plan(cfg: RunConfig, run_dir: Path, select: Stage, sft_arms: tuple[str, ...] | list[str],
                    arm: str) -> dict[str, Any] | None:
    """A preference arm's steps: the SFT arms' (the largest one's), each step over ``batch_size``
    prompts as in SFT — a pair in place of an example. Equal optimiser steps, not equal tokens: a
    DPO step reads two answers per prompt (and the reference's log-probs of both), so it costs about
    twice an SFT step; what the arms share is how often, and on how many prompts, the student is
    updated. ``None`` (epochs decide, as for the SFT arms) when ``train.max_steps`` is set or its own
    count already equals the SFT arms' common one; else a plan as ``plan_equal_steps`` gives."""
    if cfg.train.max_steps is not None:
        return None
    pairs = read_parquet(select.dir / f"{arm}.pairs.parquet").select(["prompt_id"]).to_pylist()
    train_pairs, _ = split_validation(pairs, cfg.train.eval_fraction, cfg.train.seed)
    own = optimiser_steps(len(train_pairs), cfg.train, world_size(cfg.train))  # TRL drops no pair
    sft = own_steps(cfg, run_dir, select, sft_arms)
    if len(set(sft.values())) == 1 and own in sft.values():
        return None
    return {"max_steps": max(sft.values()), "arms": {**sft, arm: own}}


def arm_tracking(cfg: RunConfig, stage: Stage, arm: str) -> Tracking:
    """The arm as the trackers of ``train.report_to`` show it. The seed is in the name because the
    replicates of ``train.seeds`` share the run's name and arms; TensorBoard's folder is in the
    stage's, so the event files stay with the run."""
    return Tracking(run_name=f"{cfg.name}/{arm}/seed-{cfg.train.seed}", project=cfg.name,
                    folder=str(stage.dir / "tracker"))


def run_train(cfg: RunConfig, run_dir: Path, select: Stage, arm: str, plan: dict[str, Any] | None = None,
              start: Stage | None = None) -> Stage:
    """Train one arm. ``plan`` (from ``plan_equal_steps`` or ``preference_plan``) sets the arm's
    optimiser steps; the manifest then records the plan beside the steps taken. A preference arm
    (``select.preference``) trains on its pairs with DPO, from the base student or, for
    SFT-then-DPO, from ``start``: the finished train stage of its ``init`` arm. An SFT arm trains
    from the base student or from ``start`` (rounds: the same arm's student of the round before)."""
    tc = cfg.train if plan is None else cfg.train.model_copy(update={"max_steps": plan["max_steps"]})
    preference = cfg.select.preference.get(arm)
    data_hash = (select.manifest() or {}).get("data_hashes", {}).get(arm)
    key = {
        "data": data_hash,
        "student": model_identity(cfg.student),
        "system_prompt": cfg.system_prompt,
        "train": train_key(tc),
        "device": cfg.device,
    }
    initial = cfg.student if start is None else str(start.dir / "model")
    if preference is not None:
        key["objective"] = preference.objective()
        key["init"] = "base" if start is None else start.key
    elif start is not None:  # rounds with init: previous (no "init" otherwise: older keys stay valid)
        key["init"] = start.key
    stage = Stage(run_dir, f"train/{arm}", key)
    if stage.reuse():
        return stage
    stage.start()
    checkpoints = stage.dir / "checkpoints"
    data_file = select.dir / (f"{arm}.parquet" if preference is None else f"{arm}.pairs.parquet")
    objective = None if preference is None else preference.objective()
    tracking = arm_tracking(cfg, stage, arm)
    if "tensorboard" in tc.report_to and prepare_checkpoints(checkpoints, stage.key) is None:
        # Training starts from step 0: event files of an earlier attempt (other settings, or killed
        # before its first checkpoint) would show beside this one's as if they were the same run.
        shutil.rmtree(tracking.folder, ignore_errors=True)
    if world_size(tc) > 1:
        info = train_distributed(initial, data_file, tc, cfg.system_prompt, pick_device(cfg.device),
                                 stage.dir / "model", checkpoints, stage.key, objective, tracking)
    elif preference is not None:
        info = train_preference(initial, read_table(data_file), tc, objective, pick_device(cfg.device),
                                stage.dir / "model", checkpoints, resume_key=stage.key, cleanup_checkpoints=False,
                                tracking=tracking)
    else:
        info = train_student(initial, read_table(data_file), tc, cfg.system_prompt, pick_device(cfg.device),
                             stage.dir / "model", checkpoints, resume_key=stage.key, cleanup_checkpoints=False,
                             tracking=tracking)
    if preference is not None:
        info["init"] = preference.init
        info["equal_steps"] = {"max_steps": plan["max_steps"], "own_steps_by_arm": plan["arms"],
                               "why": "a preference arm takes the SFT arms' step count, each step over batch_size "
                                      "prompts (a pair in place of an example)"} if plan is not None else None
    else:
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
                   step=lambda name, make: make(), starts: dict[str, Stage] | None = None) -> dict[str, Stage]:
    """Train every arm with the same settings and the same number of optimiser steps: the SFT arms
    first, then the preference arms (an SFT-then-DPO arm starts from an SFT arm's model).
    ``step(name, make)`` wraps each arm's training (the pipeline's timer and progress); ``starts``
    gives an SFT arm the trained stage it continues from (rounds), else it starts from the base."""
    starts = starts or {}
    sft_arms = [arm for arm in arms if arm not in cfg.select.preference]
    plan = plan_equal_steps(cfg, run_dir, select, sft_arms)
    trained = {arm: step(f"train/{arm}", lambda arm=arm: run_train(cfg, run_dir, select, arm, plan, starts.get(arm)))
               for arm in sft_arms}
    for arm in arms:
        if arm in cfg.select.preference:
            init = cfg.select.preference[arm].init
            start = None if init == "base" else trained[init]
            trained[arm] = step(f"train/{arm}", lambda arm=arm, start=start: run_train(
                cfg, run_dir, select, arm, preference_plan(cfg, run_dir, select, sft_arms, arm), start))
    return trained
