"""Train stage: supervised fine-tuning of the student on each arm's selected data.

Built on TRL's SFTTrainer with a conversational prompt/completion dataset, so the loss
covers the assistant tokens only. Every arm gets the same hyper-parameters, seed and
number of optimiser steps; only the data differs (arms of different sizes all take the
largest arm's step count, see ``plan_equal_steps``). The manifest's result records the
hyper-parameters the trainer actually used and the steps taken, so that claim can be
checked after the fact.

Training checkpoints every ``save_steps`` optimiser steps into ``train/<arm>/checkpoints/``.
A rerun of the same stage (same key) after a crash or kill resumes from the newest complete
checkpoint and ends at the same global step as an uninterrupted run; the checkpoints are
deleted once the stage's manifest is written, because a full checkpoint (weights plus
optimiser state) is about three times the model's size.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

from heredity.config import RunConfig, TrainConfig
from heredity.errors import HeredityError
from heredity.core.models import (
    load_model,
    load_tokenizer,
    model_identity,
    pick_device,
)
from heredity.core.rundir import (
    Stage,
    atomic_dir,
    atomic_path,
    read_table,
    write_table,
    write_text,
)

# Defaults for TrainConfig fields that may not exist yet (read with getattr so this module
# works with and without them).
DEFAULT_SAVE_STEPS = 200
DEFAULT_SAVE_TOTAL_LIMIT = 1

# How often checkpoints are written changes nothing in the trained model, so these fields
# stay out of the stage key: changing them must not retrain a finished arm.
NOT_IN_KEY = {"save_steps", "save_total_limit"}

# Fields added after runs already existed: left out of the key while at their default, so
# upgrading heredity does not retrain arms that were trained without them.
KEY_WHEN_SET = {"max_steps": None, "packing": False, "eval_fraction": 0.0, "eval_steps": 20,
                "early_stopping_patience": None, "distributed": None, "merge_lora": True}


def train_key(tc: TrainConfig) -> dict[str, Any]:
    """The training settings that decide the trained model (the train stage's key)."""
    key = tc.model_dump(exclude=NOT_IN_KEY)
    for name, default in KEY_WHEN_SET.items():
        if key.get(name) == default:
            key.pop(name, None)
    if tc.eval_fraction == 0:
        key.pop("eval_steps", None)
    if tc.method == "full":
        key.pop("merge_lora", None)  # there is no adapter to keep apart
    if tc.distributed is not None:
        # Where the processes run does not change the model; how many and how sharded does.
        d = tc.distributed
        key["distributed"] = {"world_size": d.num_processes * d.num_machines, "strategy": d.strategy}
    return key


def split_validation(rows: list[dict[str, Any]], fraction: float, seed: int
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, validation): a prompt is held out when a hash of its id and the seed falls below
    ``fraction``, so every arm of a run holds out the same prompts whatever it selected."""
    import hashlib

    if fraction <= 0:
        return rows, []
    train, validation = [], []
    for row in rows:
        digest = hashlib.sha256(f"{seed}:{row['prompt_id']}".encode()).digest()
        (validation if int.from_bytes(digest[:8], "big") / 2**64 < fraction else train).append(row)
    return train, validation

# TRL's default packing (best-fit decreasing, overflow cut): named so the step plan packs alike.
PACKING_STRATEGY = "bfd"

# Written into the checkpoint folder: checkpoints are only resumed by the stage that made them.
KEY_FILE = "stage_key.txt"

# SFTConfig fields that decide what training does; recorded per arm as the effective settings.
_HYPERPARAMETERS = (
    "num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay",
    "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "truncation_mode",
    "packing", "completion_only_loss", "seed", "data_seed", "optim", "adam_beta1", "adam_beta2",
    "adam_epsilon", "max_grad_norm", "bf16", "fp16",
)


def to_sft_rows(rows: list[dict[str, Any]], system_prompt: str | None) -> list[dict[str, Any]]:
    """Conversational prompt/completion rows: TRL then computes the loss on the answer only."""
    from heredity.strategies import to_chat_rows

    return to_chat_rows(rows, system_prompt, fmt="prompt-completion")


def token_lengths(tokenizer, sft_rows: list[dict[str, Any]]) -> list[int]:
    """Tokens of each whole conversation (system, prompt and answer), as the trainer sees it."""
    texts = [
        tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False) for r in sft_rows
    ]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _chat_ids(tokenizer, messages: list[dict[str, str]], **kwargs) -> list[int]:
    # Tokenised as TRL's SFTTrainer tokenises conversations, so the counts below match its own.
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"])


def training_sequences(tokenizer, rows: list[dict[str, Any]], tc: TrainConfig, system_prompt: str | None) -> int:
    """How many sequences TRL will train on for ``rows``: after the validation split, without the
    examples whose prompt alone fills max_length, and packed when ``tc.packing``."""
    train_rows, _ = split_validation(rows, tc.eval_fraction, tc.seed)
    sft_rows = to_sft_rows(train_rows, system_prompt)
    if not sft_rows:
        return 0
    if not tc.packing:
        kept = 0
        for r in sft_rows:
            prompt = _chat_ids(tokenizer, r["prompt"], add_generation_prompt=True)
            whole = _chat_ids(tokenizer, r["prompt"] + r["completion"])
            shared = next((i for i, (a, b) in enumerate(zip(prompt, whole)) if a != b), min(len(prompt), len(whole)))
            kept += shared < min(len(whole), tc.max_length)  # some answer token survives truncation
        return kept
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    ids = [_chat_ids(tokenizer, r["prompt"] + r["completion"]) for r in sft_rows]
    return len(pack_dataset(Dataset.from_dict({"input_ids": ids}), tc.max_length, PACKING_STRATEGY))


def world_size(tc: TrainConfig) -> int:
    d = tc.distributed
    return 1 if d is None else d.num_processes * d.num_machines


def optimiser_steps(sequences: int, tc: TrainConfig, processes: int = 1) -> int:
    """Optimiser steps the trainer takes for ``sequences`` over ``tc.epochs`` (as transformers
    counts them: each process gets ceil(batches / processes) batches, and a partial
    accumulation at the end of an epoch still makes a step)."""
    if sequences <= 0:
        return 0
    batches = math.ceil(math.ceil(sequences / tc.batch_size) / processes)
    per_epoch = max(math.ceil(batches / tc.gradient_accumulation_steps), 1)
    return math.ceil(tc.epochs * per_epoch)


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


# --- checkpoints -------------------------------------------------------------------------

_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def _checkpoints(work_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in work_dir.glob("checkpoint-*"):
        match = _CHECKPOINT.fullmatch(path.name)
        if match and path.is_dir():
            found.append((int(match[1]), path))
    return sorted(found)


def _is_complete(checkpoint: Path) -> bool:
    # The trainer writes trainer_state.json last (after weights, optimiser, scheduler and RNG
    # states), so a checkpoint cut short by a kill lacks it or holds a truncated one.
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def prepare_checkpoints(work_dir: Path, key: str | None) -> Path | None:
    """Return the checkpoint to resume from, after discarding what cannot be trusted.

    Checkpoints are reused only when ``work_dir`` was written for the same stage key (same
    data, student and settings); anything else there is stale and is deleted. Without a key
    nothing is resumed. An incomplete checkpoint newer than the last complete one is the
    save a kill interrupted; it is deleted so the trainer rewrites it cleanly.
    """
    work_dir = Path(work_dir)
    marker = work_dir / KEY_FILE
    try:
        same_stage = key is not None and marker.read_text(encoding="utf-8").strip() == key
    except OSError:
        same_stage = False
    if not same_stage and work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if key is not None:
        write_text(marker, key)
    resume = None
    for _, path in reversed(_checkpoints(work_dir)):
        if resume is not None:
            break
        if _is_complete(path):
            resume = path
        else:
            shutil.rmtree(path)
    return resume


def newest_checkpoint(work_dir: Path) -> Path | None:
    complete = [path for _, path in _checkpoints(Path(work_dir)) if _is_complete(path)]
    return complete[-1] if complete else None


# --- measurements ------------------------------------------------------------------------

def _make_meter(device: str):
    from transformers import TrainerCallback

    class ThroughputMeter(TrainerCallback):
        """Adds to each log entry ``tokens_per_s`` (TRL's running ``num_tokens``, non-padding
        tokens this session, over the wall time since the previous entry) and the peak memory
        since training began (``peak_rss_mb``, ``peak_gpu_mb``), so the log shows the step at
        which memory grew.

        The peaks are not reset between entries: resetting the kernel's RSS high-water mark
        also lowers what getrusage reports as the process's peak, which callers rely on.
        """

        def __init__(self) -> None:
            self.tokens = 0.0
            self._last_time = time.perf_counter()
            self._last_tokens = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            # After a resume TRL's counter starts again at zero, so both clocks restart here.
            self._last_time = time.perf_counter()
            self._last_tokens = 0.0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "num_tokens" not in logs or not state.log_history:
                return
            now = time.perf_counter()
            tokens = float(logs["num_tokens"])
            elapsed = now - self._last_time
            # The trainer appended a copy of ``logs`` to log_history just before calling us;
            # annotating that copy puts the figures in the saved log and checkpoints.
            entry = state.log_history[-1]
            if elapsed > 0:
                entry["tokens_per_s"] = (tokens - self._last_tokens) / elapsed
            entry.update(peak_memory_mb(device))
            self.tokens = tokens
            self._last_time, self._last_tokens = now, tokens

    return ThroughputMeter()


def _use_cpu_threads() -> None:
    """One compute thread per CPU this process may run on, unless OMP_NUM_THREADS says otherwise.

    torch reads OMP_NUM_THREADS at start-up; overriding it would undo a deliberate choice
    (on a CPU shared with other jobs, fewer threads than cores can be several times faster,
    because torch's threads wait for each other whenever one of them is descheduled).
    """
    import torch

    if "OMP_NUM_THREADS" in os.environ:
        return
    try:
        usable = len(os.sched_getaffinity(0))  # honours CPU sets of containers and taskset
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    torch.set_num_threads(usable)


def _reset_peak_memory(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    # Linux only: resets the process's peak RSS (VmHWM), so the peak measured afterwards is
    # training's own and not that of an earlier stage run in the same process.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 1024), 1)


def peak_memory_mb(device: str) -> dict[str, float | None]:
    import torch

    gpu = round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.startswith("cuda") else None
    return {"peak_rss_mb": _peak_rss_mb(), "peak_gpu_mb": gpu}


@contextmanager
def explain_out_of_memory(tc: TrainConfig, device: str) -> Iterator[None]:
    """Turn an out-of-memory crash into one line that names the settings to lower."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError:
        raise HeredityError(_oom_message(tc, "GPU")) from None
    except RuntimeError as exc:  # the CPU allocator raises a plain RuntimeError
        if "can't allocate memory" not in str(exc):
            raise
        raise HeredityError(_oom_message(tc, "CPU")) from None


def _oom_message(tc: TrainConfig, where: str) -> str:
    lora = "" if tc.method in ("lora", "qlora") else ", or set train.method: lora"
    return (
        f"training ran out of {where} memory (batch_size={tc.batch_size}, max_length={tc.max_length}, "
        f"gradient_accumulation_steps={tc.gradient_accumulation_steps}, method={tc.method}): lower "
        f"train.batch_size and raise train.gradient_accumulation_steps to keep the effective batch, "
        f"lower train.max_length{lora}"
    )


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def effective_hyperparameters(trainer) -> dict[str, Any]:
    """What the trainer actually used (after SFTConfig's own defaults and conversions)."""
    args = trainer.args
    found = {name: _plain(getattr(args, name, None)) for name in _HYPERPARAMETERS}
    found["world_size"] = args.world_size
    found["total_batch_size"] = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    peft_config = getattr(trainer.model, "peft_config", None)
    if peft_config:
        lora = next(iter(peft_config.values()))
        modules = lora.target_modules
        found["lora"] = {"r": lora.r, "alpha": lora.lora_alpha, "dropout": lora.lora_dropout,
                         "target_modules": sorted(modules) if isinstance(modules, (set, list)) else modules}
    return found


def _best_step(trainer) -> int | None:
    best = trainer.state.best_model_checkpoint
    match = _CHECKPOINT.fullmatch(Path(best).name) if best else None
    return int(match[1]) if match else None


def plot_loss(log: list[dict[str, Any]], path: Path, title: str) -> None:
    """Training loss per optimiser step as a PNG (the Agg canvas: no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [(e["step"], e["loss"]) for e in log if "loss" in e and "step" in e]
    figure = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if points:
        steps, losses = zip(*points)
        axes.plot(steps, losses, marker="o" if len(points) <= 50 else None, markersize=3, label="training")
    validation = [(e["step"], e["eval_loss"]) for e in log if "eval_loss" in e and "step" in e]
    if validation:
        steps, losses = zip(*validation)
        axes.plot(steps, losses, marker="s", markersize=4, label="validation")
        axes.legend()
    axes.set_xlabel("optimiser step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


# --- training ----------------------------------------------------------------------------

def check_qlora(device: str) -> None:
    """QLoRA needs bitsandbytes' 4-bit CUDA kernels: say so in one line before loading anything."""
    if not device.startswith("cuda"):
        raise HeredityError(f"train.method: qlora needs a CUDA GPU (device is '{device}'); "
                            f"use train.method: lora on CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise HeredityError("train.method: qlora needs bitsandbytes: pip install 'heredity[qlora]'") from None


def load_student(student: str, tc: TrainConfig, device: str):
    """The model to train: as is, or (QLoRA) quantised to 4-bit NF4 and made ready for k-bit training."""
    if tc.method != "qlora":
        return load_model(student, device)
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    check_qlora(device)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16,
    )
    model = load_model(student, device, quantization_config=quantization)
    # Casts norms to fp32 and enables input gradients, which LoRA on a frozen 4-bit base needs.
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


class PreparedTraining:
    """A built SFTTrainer and what was learnt about the data on the way (before any step)."""

    def __init__(self, trainer, tokenizer, meter, rows, validation, lengths, too_long, kept, notes):
        self.trainer, self.tokenizer, self.meter = trainer, tokenizer, meter
        self.rows, self.validation, self.lengths = rows, validation, lengths
        self.too_long, self.kept, self.notes = too_long, kept, notes


def prepare_training(student: str, rows: list[dict[str, Any]], tc: TrainConfig, system_prompt: str | None,
                     device: str, work_dir: Path) -> PreparedTraining:
    """Check the data, load the student and build the SFTTrainer (TRL tokenises here).

    Split from ``train_student`` so the batches TRL builds can be inspected without training.
    """
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    if not rows:
        raise HeredityError("cannot train on an empty selection (every prompt was filtered out)")
    if tc.method == "qlora":
        check_qlora(device)
    notes: list[str] = []
    per_step = tc.batch_size * tc.gradient_accumulation_steps
    if len(rows) < per_step:
        # Training goes ahead: the batch size is part of the settings every arm shares, so it
        # is not shrunk here; each epoch is then one optimiser step over a partial batch.
        notes.append(f"only {len(rows)} training examples, fewer than one optimiser step takes "
                     f"(batch_size × gradient_accumulation_steps = {per_step}): each epoch is one smaller step")
    if device == "cpu":
        _use_cpu_threads()
    tokenizer = load_tokenizer(student, padding_side="right")
    rows, validation = split_validation(rows, tc.eval_fraction, tc.seed)
    if tc.eval_fraction and (not validation or not rows):
        raise HeredityError(f"train.eval_fraction={tc.eval_fraction} leaves {len(rows)} training and "
                            f"{len(validation)} validation examples; both need at least one")
    sft_rows = to_sft_rows(rows, system_prompt)
    sft_validation = to_sft_rows(validation, system_prompt) if validation else []
    lengths = token_lengths(tokenizer, sft_rows)
    too_long = sum(n > tc.max_length for n in lengths)
    if too_long:
        notes.append(f"{too_long} of {len(rows)} examples are longer than max_length={tc.max_length} tokens "
                     f"(longest {max(lengths)}); training sees only their first {tc.max_length} tokens")

    model = load_student(student, tc, device)
    model.train()
    peft_config = None
    if tc.method in ("lora", "qlora"):
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=tc.lora_r, lora_alpha=tc.lora_alpha, lora_dropout=tc.lora_dropout,
            target_modules=tc.lora_target_modules, task_type="CAUSAL_LM",
        )
    save_steps = getattr(tc, "save_steps", DEFAULT_SAVE_STEPS)
    validate: dict[str, Any] = {}
    if sft_validation:
        validate = {"eval_strategy": "steps", "eval_steps": tc.eval_steps, "per_device_eval_batch_size": tc.batch_size}
        if tc.early_stopping_patience is not None:
            # Keeping the best model needs a checkpoint at every validation that might be it.
            save_steps = tc.eval_steps * max(1, save_steps // tc.eval_steps)
            validate.update(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False)
    args = SFTConfig(
        output_dir=str(work_dir),
        num_train_epochs=tc.epochs,
        max_steps=tc.max_steps if tc.max_steps is not None else -1,
        packing=tc.packing,
        packing_strategy=PACKING_STRATEGY,
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
        completion_only_loss=True,
        logging_steps=1,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=getattr(tc, "save_total_limit", DEFAULT_SAVE_TOTAL_LIMIT),
        report_to="none",
        use_cpu=device == "cpu",
        bf16=device.startswith("cuda") and torch.cuda.is_bf16_supported(),
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    meter = _make_meter(device)
    callbacks = [meter]
    if tc.early_stopping_patience is not None:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=tc.early_stopping_patience))
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(sft_rows),
        eval_dataset=Dataset.from_list(sft_validation) if sft_validation else None,
        processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # the log goes to train_log.parquet instead
    # Packed, the dataset holds sequences, not examples; TRL drops none of them.
    kept = len(rows) if tc.packing else len(trainer.train_dataset)
    if kept == 0:
        raise HeredityError(f"no example has answer tokens within max_length={tc.max_length} "
                            f"(the prompts alone fill it); raise train.max_length")
    if kept < len(rows):
        # TRL drops examples whose prompt alone fills max_length (no answer token is left to
        # learn from). The prompts are the same in every arm, so every arm loses the same ones.
        notes.append(f"{len(rows) - kept} examples dropped: their prompt alone fills max_length={tc.max_length}")
    return PreparedTraining(trainer, tokenizer, meter, rows, validation, lengths, too_long, kept, notes)


def train_student(student: str, rows: list[dict[str, Any]], tc: TrainConfig, system_prompt: str | None,
                  device: str, output: Path, work_dir: Path, resume_key: str | None = None,
                  cleanup_checkpoints: bool = True) -> dict[str, Any]:
    """Fine-tune ``student`` on ``rows`` (prompt/text pairs) and save it to ``output``.

    Checkpoints go to ``work_dir``. With ``resume_key`` (the stage key), a complete checkpoint
    left there by an interrupted call with the same key is resumed; with ``cleanup_checkpoints``
    the folder is deleted once the model is saved (``run_train`` deletes it itself, after the
    manifest, so a kill between the two still resumes).
    """
    prepared = prepare_training(student, rows, tc, system_prompt, device, work_dir)
    trainer, tokenizer, meter = prepared.trainer, prepared.tokenizer, prepared.meter
    for note in prepared.notes:
        warnings.warn(note, stacklevel=2)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # In a distributed run the launching process has already pruned the checkpoints; its
    # workers only look, so that they do not delete files under each other.
    resume_from = newest_checkpoint(work_dir) if distributed else prepare_checkpoints(work_dir, resume_key)

    _reset_peak_memory(device)
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
    resumed_step = int(_CHECKPOINT.fullmatch(resume_from.name)[1]) if resume_from else None
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
        "packed_sequences": sequences if tc.packing else None,
        "best_step": _best_step(trainer),
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


def _base_ref(student: str) -> str:
    """How an adapter names its base model: heredity's own reference (``embedded:...``, a hub
    id, or an absolute local path), which ``models.load_model`` resolves itself."""
    path = Path(student).expanduser()
    return str(path.resolve()) if not student.startswith("embedded:") and path.exists() else student


def write_adapter(model, folder: Path, student: str, state_dict: dict | None = None) -> None:
    """Save a LoRA adapter whose config points at ``student`` as heredity names it, not at the
    cache folder the model was loaded from."""
    model.save_pretrained(folder, state_dict=state_dict) if state_dict is not None else model.save_pretrained(folder)
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = _base_ref(student)
    config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")


def save_student(trainer, tokenizer, student: str, tc: TrainConfig, output: Path, work_dir: Path,
                 device: str = "cpu") -> None:
    """The trained student in ``output``: full weights, LoRA merged into them (the default), or
    with ``train.merge_lora: false`` the adapter alone (``models.load_model`` applies it)."""
    trained = trainer.model
    with atomic_dir(output) as tmp:
        if tc.method != "full" and not tc.merge_lora:
            write_adapter(trained, tmp, student)
        elif tc.method == "qlora":
            adapter = work_dir / "adapter"
            write_adapter(trained, adapter, student)
            # merged into an unquantised copy of the base: merging into the 4-bit model would lose precision
            load_model(str(adapter), device).save_pretrained(tmp)
            shutil.rmtree(adapter, ignore_errors=True)
        else:
            if tc.method == "lora":
                trained = trained.merge_and_unload()  # evaluation then loads a plain model
            trained.eval()
            trained.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


# --- distributed ---------------------------------------------------------------------------

def save_distributed(trainer, tokenizer, student: str, tc: TrainConfig, output: Path, work_dir: Path) -> None:
    """Save from a multi-process run: every rank helps gather the weights (ZeRO-3 and FSDP
    shard them), then rank 0 writes the model. A LoRA adapter is saved as is
    (``merge_lora: false``) or merged into a fresh copy of the base model, which works
    whatever the sharding was."""
    accelerator = trainer.accelerator
    state = accelerator.get_state_dict(trainer.model)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(trainer.model)
        with atomic_dir(output) as tmp:
            if tc.method != "full" and not tc.merge_lora:
                write_adapter(unwrapped, tmp, student, state_dict=state)
            elif tc.method != "full":
                adapter = work_dir / "adapter"
                write_adapter(unwrapped, adapter, student, state_dict=state)
                # merged into a fresh copy of the base: the trained one may be sharded
                load_model(str(adapter)).save_pretrained(tmp)
                shutil.rmtree(adapter, ignore_errors=True)
            else:
                unwrapped.save_pretrained(tmp, state_dict=state)
            tokenizer.save_pretrained(tmp)
    accelerator.wait_for_everyone()


def launch_command(d, device: str, job: Path) -> list[str]:
    """The command that starts ``d.num_processes`` training workers on this machine.

    GPUs go through ``accelerate launch`` (DDP, DeepSpeed ZeRO or FSDP2). CPUs go through
    torchrun with the gloo backend: accelerate's multi-CPU launcher needs MPI.
    """
    worker = ["-m", "heredity.train", str(job)]
    if not device.startswith("cuda"):
        if d.strategy != "ddp":
            raise HeredityError(f"train.distributed.strategy={d.strategy} needs GPUs; on CPU use ddp")
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={d.num_processes}",
                f"--nnodes={d.num_machines}", f"--node_rank={d.machine_rank}",
                f"--master_addr={d.main_process_ip or '127.0.0.1'}", f"--master_port={d.main_process_port}",
                *worker]
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--num_processes", str(d.num_processes * d.num_machines), "--num_machines", str(d.num_machines),
           "--machine_rank", str(d.machine_rank), "--main_process_port", str(d.main_process_port),
           "--mixed_precision", "bf16", "--dynamo_backend", "no"]
    if d.main_process_ip:
        cmd += ["--main_process_ip", d.main_process_ip]
    if d.strategy == "ddp":
        cmd += ["--multi_gpu"]
    elif d.strategy in ("zero2", "zero3"):
        cmd += ["--use_deepspeed", "--zero_stage", d.strategy[-1]]
        if d.strategy == "zero3":
            cmd += ["--zero3_init_flag", "false", "--zero3_save_16bit_model", "true"]
    else:  # fsdp
        cmd += ["--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
                "--fsdp_state_dict_type", "FULL_STATE_DICT", "--fsdp_reshard_after_forward", "true",
                "--fsdp_cpu_ram_efficient_loading", "false"]
    return cmd + ["-m", *worker]


def train_distributed(student: str, rows_file: Path, tc: TrainConfig, system_prompt: str | None, device: str,
                      output: Path, work_dir: Path, resume_key: str) -> dict[str, Any]:
    """Run ``train_student`` in ``num_processes`` workers and return rank 0's result."""
    import subprocess

    from heredity.core.rundir import read_json, write_json

    prepare_checkpoints(work_dir, resume_key)
    job = work_dir / "job.json"
    result_file = work_dir / "result.json"
    result_file.unlink(missing_ok=True)
    write_json(job, {"student": student, "rows": str(rows_file), "train": tc.model_dump(mode="json"),
                     "system_prompt": system_prompt, "device": device, "output": str(output),
                     "work_dir": str(work_dir), "resume_key": resume_key, "result": str(result_file)})
    log_file = output.parent / "launch.log"
    with open(log_file, "w", encoding="utf-8") as log:
        code = subprocess.run(launch_command(tc.distributed, device, job), stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    if code != 0 or not result_file.is_file():
        last = _last_error_line(log_file)
        raise HeredityError(f"distributed training failed (exit {code}): {last} (full log: {log_file})")
    return read_json(result_file)


def _last_error_line(log_file: Path) -> str:
    lines = [ln.strip() for ln in log_file.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error" in line or "error:" in line:
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def _worker(job_file: str) -> None:
    """Entry point of one distributed worker (``python -m heredity.train JOB``)."""
    from heredity.core.rundir import read_json, write_json

    job = read_json(Path(job_file))
    device = job["device"]
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    info = train_student(job["student"], read_table(Path(job["rows"])), TrainConfig(**job["train"]),
                         job["system_prompt"], device, Path(job["output"]), Path(job["work_dir"]),
                         resume_key=job["resume_key"], cleanup_checkpoints=False)
    if int(os.environ.get("RANK", "0")) == 0:
        write_json(Path(job["result"]), info)


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
    d = tc.distributed
    if d is not None and d.num_processes * d.num_machines > 1:
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


if __name__ == "__main__":
    _worker(sys.argv[1])
