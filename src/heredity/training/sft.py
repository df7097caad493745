"""Supervised fine-tuning of the student with TRL's SFTTrainer.

A conversational prompt/completion dataset, so the loss covers the assistant tokens only.
``prepare_training`` checks the data, loads the student and builds the trainer;
``train_student`` trains it (``training.fit``: resuming from a checkpoint of the same stage key),
saves the model and returns what the run measured.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from heredity.config import TrainConfig
from heredity.core.models import load_model, load_tokenizer
from heredity.errors import HeredityError
from heredity.training.fit import PreparedTraining, Tracking, fit, lora_config, shared_arguments, tensorboard_folder
from heredity.training.fit import callbacks as trainer_callbacks
from heredity.training.steps import (
    PACKING_STRATEGY,
    split_for_training,
    to_sft_rows,
    token_lengths,
)


def use_cpu_threads() -> None:
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


def prepare_training(student: str, rows: list[dict[str, Any]], tc: TrainConfig, system_prompt: str | None,
                     device: str, work_dir: Path, tracking: Tracking | None = None) -> PreparedTraining:
    """Check the data, load the student and build the SFTTrainer (TRL tokenises here). ``tracking``:
    where the trackers of ``train.report_to`` file this arm.

    Split from ``train_student`` so the batches TRL builds can be inspected without training.
    """
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
        use_cpu_threads()
    tokenizer = load_tokenizer(student, padding_side="right")
    rows, validation = split_for_training(rows, tc)
    sft_rows = to_sft_rows(rows, system_prompt)
    sft_validation = to_sft_rows(validation, system_prompt) if validation else []
    lengths = token_lengths(tokenizer, sft_rows)
    too_long = sum(n > tc.max_length for n in lengths)
    if too_long:
        notes.append(f"{too_long} of {len(rows)} examples are longer than max_length={tc.max_length} tokens "
                     f"(longest {max(lengths)}); training sees only their first {tc.max_length} tokens")

    model = load_student(student, tc, device)
    model.train()
    peft_config = lora_config(tc)
    args = SFTConfig(**shared_arguments(tc, device, work_dir, validating=bool(sft_validation), tracking=tracking),
                     packing=tc.packing, packing_strategy=PACKING_STRATEGY, completion_only_loss=True)
    callbacks = trainer_callbacks(tc, device)
    meter = callbacks[0]
    with tensorboard_folder(tc, tracking):
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
    return PreparedTraining(trainer, tokenizer, meter, rows, validation, lengths, too_long, kept, notes,
                            packed=tc.packing)


def train_student(student: str, rows: list[dict[str, Any]], tc: TrainConfig, system_prompt: str | None,
                  device: str, output: Path, work_dir: Path, resume_key: str | None = None,
                  cleanup_checkpoints: bool = True, tracking: Tracking | None = None) -> dict[str, Any]:
    """Fine-tune ``student`` on ``rows`` (prompt/text pairs) and save it to ``output`` (see ``fit``)."""
    prepared = prepare_training(student, rows, tc, system_prompt, device, work_dir, tracking)
    return fit(prepared, student, tc, device, output, work_dir, resume_key, cleanup_checkpoints)
