"""Train stage: supervised fine-tuning of the student on each arm's selected data.

Built on TRL's SFTTrainer with a conversational prompt/completion dataset, so the loss
covers the assistant tokens only. Every arm gets the same hyper-parameters, seed and
number of optimiser steps; only the data differs.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from heredity.config import RunConfig, TrainConfig
from heredity.errors import HeredityError
from heredity.models import chat_messages, load_model, load_tokenizer, model_identity, pick_device
from heredity.rundir import Stage, atomic_dir, read_table, write_table


def to_sft_rows(rows: list[dict[str, Any]], system_prompt: str | None) -> list[dict[str, Any]]:
    return [
        {"prompt": chat_messages(r["prompt"], system_prompt),
         "completion": [{"role": "assistant", "content": r["text"]}]}
        for r in rows
    ]


def count_too_long(tokenizer, sft_rows: list[dict[str, Any]], max_length: int) -> int:
    texts = [
        tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False) for r in sft_rows
    ]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return sum(n > max_length for n in lengths)


def steps_per_epoch(n_examples: int, tc: TrainConfig) -> int:
    return math.ceil(math.ceil(n_examples / tc.batch_size) / tc.gradient_accumulation_steps)


def train_student(student: str, rows: list[dict[str, Any]], tc: TrainConfig, system_prompt: str | None,
                  device: str, output: Path, work_dir: Path) -> dict[str, Any]:
    """Fine-tune ``student`` on ``rows`` (prompt/text pairs) and save it to ``output``."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if not rows:
        raise HeredityError("cannot train on an empty selection (every prompt was filtered out)")
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = load_tokenizer(student, padding_side="right")
    model = load_model(student, device)
    model.train()
    sft_rows = to_sft_rows(rows, system_prompt)
    too_long = count_too_long(tokenizer, sft_rows, tc.max_length)
    peft_config = None
    if tc.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=tc.lora_r, lora_alpha=tc.lora_alpha, lora_dropout=tc.lora_dropout,
            target_modules=tc.lora_target_modules, task_type="CAUSAL_LM",
        )
    args = SFTConfig(
        output_dir=str(work_dir),
        num_train_epochs=tc.epochs,
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
        save_strategy="no",
        report_to="none",
        use_cpu=device == "cpu",
        bf16=device == "cuda" and torch.cuda.is_bf16_supported(),
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(sft_rows),
        processing_class=tokenizer, peft_config=peft_config,
    )
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the log goes to train_log.parquet instead
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    trained = trainer.model
    if tc.method == "lora":
        trained = trained.merge_and_unload()
    trained.eval()
    with atomic_dir(output) as tmp:
        trained.save_pretrained(tmp)
        tokenizer.padding_side = "left"
        tokenizer.save_pretrained(tmp)
    log = [dict(entry) for entry in trainer.state.log_history]
    losses = [e["loss"] for e in log if "loss" in e]
    return {
        "steps": trainer.state.global_step,
        "examples": len(rows),
        "too_long": too_long,
        "train_seconds": round(seconds, 2),
        "train_loss": result.training_loss,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "log": log,
    }


def run_train(cfg: RunConfig, run_dir: Path, select: Stage, arm: str) -> Stage:
    data_hash = (select.manifest() or {}).get("data_hashes", {}).get(arm)
    stage = Stage(run_dir, f"train/{arm}", {
        "data": data_hash,
        "student": model_identity(cfg.student),
        "system_prompt": cfg.system_prompt,
        "train": cfg.train.model_dump(),
        "device": cfg.device,
    })
    if stage.reuse():
        return stage
    stage.start()
    rows = read_table(select.dir / f"{arm}.parquet")
    info = train_student(cfg.student, rows, cfg.train, cfg.system_prompt, pick_device(cfg.device),
                         stage.dir / "model", stage.dir / "checkpoints")
    log = info.pop("log")
    keys = sorted({k for e in log for k in e})
    write_table(stage.dir / "train_log.parquet", [{k: e.get(k) for k in keys} for e in log])
    stage.finish({"model": "model", "log": "train_log.parquet"}, result=info)
    return stage
