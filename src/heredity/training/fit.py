"""Training a prepared trainer, whatever its objective: resume from the newest checkpoint of the
same stage key, train, save the student, and return what the run measured (steps, seconds,
tokens, memory, losses, the effective hyper-parameters). ``training.sft`` and ``training.dpo``
each build the trainer; this is what they share.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heredity.config import TrainConfig
from heredity.errors import HeredityError
from heredity.training.checkpoints import checkpoint_step, newest_checkpoint, prepare_checkpoints
from heredity.training.save import save_distributed, save_student
from heredity.training.steps import optimiser_steps
from heredity.training.telemetry import (
    best_step,
    effective_hyperparameters,
    explain_out_of_memory,
    make_meter,
    peak_memory_mb,
    reset_peak_memory,
)


@dataclass(frozen=True)
class Tracking:
    """How one arm's trainer shows up in the trackers ``train.report_to`` names: its run name
    (``<run>/<arm>/seed-<seed>``), the project (trackio groups runs by it; the run's name) and the
    folder TensorBoard writes its event files to (``train/<arm>/tracker``). Plain strings, so a
    distributed job file carries it to its workers."""

    run_name: str
    project: str
    folder: str


def tracker_arguments(tc: TrainConfig, tracking: Tracking | None) -> dict[str, Any]:
    """``report_to`` for the trainer ("none" unless ``train.report_to`` names trackers), with the
    run name and project when ``tracking`` gives them (else the trackers' own defaults)."""
    if not tc.report_to:
        return {"report_to": "none"}
    named = {"run_name": tracking.run_name, "project": tracking.project} if tracking is not None else {}
    return {"report_to": list(tc.report_to), **named}


@contextmanager
def tensorboard_folder(tc: TrainConfig, tracking: Tracking | None) -> Iterator[None]:
    """Build the trainer inside this: its TensorBoard callback then writes to ``tracking.folder``.

    transformers 5 dropped ``TrainingArguments.logging_dir``; the callback reads the folder from
    TENSORBOARD_LOGGING_DIR once, when the trainer creates it (else a ``runs/`` folder inside
    ``output_dir``, the checkpoints, which are deleted after training). Set for that moment only, so
    one arm's folder never leaks into the next arm's trainer or the caller's environment.
    """
    if "tensorboard" not in tc.report_to or tracking is None:
        yield
        return
    before = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = tracking.folder
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = before


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX), where bf16 autocast
    is several times faster than fp32; elsewhere it is emulated and slower."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes (or not an x86 CPU)
        return False


def uses_bf16(tc: TrainConfig, device: str) -> bool:
    """``train.bf16`` resolved on ``device``: unset means a CUDA GPU that computes bf16; 'auto' adds
    CPUs that compute it natively."""
    import torch

    cuda = device.startswith("cuda")
    if tc.bf16 is None:
        return cuda and torch.cuda.is_bf16_supported()
    if tc.bf16 == "auto":
        return torch.cuda.is_bf16_supported() if cuda else cpu_computes_bf16()
    if tc.bf16 and cuda and not torch.cuda.is_bf16_supported():
        raise HeredityError(f"train.bf16: true, but the GPU ({torch.cuda.get_device_name()}) does not compute "
                            "bf16; use 'auto' or false")
    return tc.bf16


def shared_arguments(tc: TrainConfig, device: str, work_dir: Path, validating: bool,
                     tracking: Tracking | None = None) -> dict[str, Any]:
    """The trainer arguments every arm shares, whatever its objective (SFTConfig and DPOConfig alike):
    the optimiser, schedule, batch, length, seed, logging (and the trackers it goes to),
    checkpoints and, with a validation split, evaluation (and keeping the best checkpoint under
    early stopping)."""
    save_steps = tc.save_steps
    validate: dict[str, Any] = {}
    if validating:
        validate = {"eval_strategy": "steps", "eval_steps": tc.eval_steps, "per_device_eval_batch_size": tc.batch_size}
        if tc.early_stopping_patience is not None:
            # Keeping the best model needs a checkpoint at every validation that might be it.
            save_steps = tc.eval_steps * max(1, save_steps // tc.eval_steps)
            validate.update(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False)
    return dict(
        output_dir=str(work_dir),
        num_train_epochs=tc.epochs,
        max_steps=tc.max_steps if tc.max_steps is not None else -1,
        **validate,
        learning_rate=tc.learning_rate,
        lr_scheduler_type=tc.lr_scheduler,
        warmup_steps=tc.warmup_ratio,  # a float below 1 is a ratio of total steps
        weight_decay=tc.weight_decay,
        per_device_train_batch_size=tc.batch_size,
        gradient_accumulation_steps=tc.gradient_accumulation_steps,
        max_length=tc.max_length,
        seed=tc.seed,
        data_seed=tc.seed,
        logging_steps=1,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=tc.save_total_limit,
        **tracker_arguments(tc, tracking),
        use_cpu=device == "cpu",
        bf16=uses_bf16(tc, device),
        gradient_checkpointing=tc.gradient_checkpointing,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def lora_config(tc: TrainConfig):
    """peft's LoraConfig for ``train.method`` lora or qlora; None for full fine-tuning."""
    if tc.method not in ("lora", "qlora"):
        return None
    from peft import LoraConfig

    return LoraConfig(r=tc.lora_r, lora_alpha=tc.lora_alpha, lora_dropout=tc.lora_dropout,
                      target_modules=tc.lora_target_modules, task_type="CAUSAL_LM")


def callbacks(tc: TrainConfig, device: str) -> list:
    """The throughput/memory meter first (``PreparedTraining.meter``), then early stopping when set."""
    found = [make_meter(device)]
    if tc.early_stopping_patience is not None:
        from transformers import EarlyStoppingCallback

        found.append(EarlyStoppingCallback(early_stopping_patience=tc.early_stopping_patience))
    return found


class PreparedTraining:
    """A built trainer (TRL's SFTTrainer or DPOTrainer) and what was learnt about the data on the way
    (before any step). ``kept``: examples (or pairs) the trainer trains on; ``packed``: whether its
    dataset holds packed sequences rather than examples."""

    def __init__(self, trainer, tokenizer, meter, rows, validation, lengths, too_long, kept, notes, packed=False):
        self.trainer, self.tokenizer, self.meter = trainer, tokenizer, meter
        self.rows, self.validation, self.lengths = rows, validation, lengths
        self.too_long, self.kept, self.notes, self.packed = too_long, kept, notes, packed



def fit(prepared: PreparedTraining, student: str, tc: TrainConfig, device: str, output: Path, work_dir: Path,
        resume_key: str | None = None, cleanup_checkpoints: bool = True) -> dict[str, Any]:
    """Train a prepared trainer, save the model to ``output`` and return what the run measured.

    ``student`` is the model training started from (an adapter's base names it). Checkpoints go to ``work_dir``. With ``resume_key`` (the stage key), a complete checkpoint
    left there by an interrupted call with the same key is resumed; with ``cleanup_checkpoints``
    the folder is deleted once the model is saved (``run_train`` deletes it itself, after the
    manifest, so a kill between the two still resumes).
    """
    trainer, tokenizer, meter = prepared.trainer, prepared.tokenizer, prepared.meter
    for note in prepared.notes:
        warnings.warn(note, stacklevel=2)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # In a distributed run the launching process has already pruned the checkpoints; its
    # workers only look, so that they do not delete files under each other.
    resume_from = newest_checkpoint(work_dir) if distributed else prepare_checkpoints(work_dir, resume_key)

    reset_peak_memory(device)
    started = time.perf_counter()
    with explain_out_of_memory(tc, device):
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - started
    memory = peak_memory_mb(device)

    tokenizer.padding_side = "left"
    if distributed:
        save_distributed(trainer, tokenizer, student, tc, output, work_dir)
    else:
        save_student(trainer, tokenizer, student, tc, output, work_dir, device)
    if cleanup_checkpoints:
        shutil.rmtree(work_dir, ignore_errors=True)

    log = [dict(entry) for entry in trainer.state.log_history]
    losses = [e["loss"] for e in log if "loss" in e]
    resumed_step = checkpoint_step(resume_from) if resume_from else None
    sequences = len(trainer.train_dataset)
    return {
        "steps": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        # What ``epochs`` alone would have given this arm; differs from max_steps when the
        # arms were equalised to the largest one (see ``plan_equal_steps``).
        "own_steps": optimiser_steps(sequences, tc.model_copy(update={"max_steps": None}), trainer.args.world_size),
        "steps_this_run": trainer.state.global_step - (resumed_step or 0),
        "resumed_from_step": resumed_step,
        "seed": tc.seed,
        "examples": len(prepared.rows),
        "examples_trained": prepared.kept,
        "too_long": prepared.too_long,
        "longest_tokens": max(prepared.lengths),
        "train_seconds": round(seconds, 2),
        "tokens": int(meter.tokens),
        "tokens_per_s": round(meter.tokens / seconds, 1) if seconds > 0 else None,
        **memory,
        "validation_examples": len(prepared.validation),
        "packed_sequences": sequences if prepared.packed else None,
        "best_step": best_step(trainer),
        "best_eval_loss": trainer.state.best_metric,
        "stopped_early": trainer.state.global_step < trainer.state.max_steps,
        "train_loss": result.training_loss,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "hyperparameters": effective_hyperparameters(trainer),
        "saved": "adapter" if tc.method != "full" and not tc.merge_lora else "model",
        "warnings": prepared.notes,
        "log": log,
    }
