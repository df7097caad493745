"""Preference training of the student with TRL's DPOTrainer, on the pairs the select stage built.

The settings every arm shares (``train``: epochs or steps, learning rate, batch size, max_length,
seed, method) mean the same here as for SFT, with one pair in place of one example: a batch of 8 is
8 prompts, each with its chosen and its rejected answer. The objective (``select.preference``: loss,
β, reference) is the arm's own. The reference model is the model training starts from: the base
student, or for SFT-then-DPO an SFT arm's trained model. With LoRA, TRL switches the adapter off to
get it; with full fine-tuning it is a second copy in memory unless its log-probs are computed once
before training (``precompute_ref_log_probs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from heredity.config import TrainConfig
from heredity.core.models import load_model, load_tokenizer
from heredity.errors import HeredityError
from heredity.training.fit import PreparedTraining, Tracking, fit, lora_config, shared_arguments, tensorboard_folder
from heredity.training.fit import callbacks as trainer_callbacks
from heredity.training.sft import check_qlora, load_student, use_cpu_threads
from heredity.training.steps import split_for_training

PAIR_COLUMNS = ("prompt", "chosen", "rejected")


def pair_lengths(tokenizer, pairs: list[dict[str, Any]]) -> list[int]:
    """Tokens of each pair's longer side (prompt and answer), as the trainer sees it."""
    texts = [tokenizer.apply_chat_template(p["prompt"] + p[side], tokenize=False)
             for p in pairs for side in ("chosen", "rejected")]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [max(len(ids[2 * i]), len(ids[2 * i + 1])) for i in range(len(pairs))]


def prepare_preference_training(start: str, pairs: list[dict[str, Any]], tc: TrainConfig,
                                objective: dict[str, Any], device: str, work_dir: Path,
                                tracking: Tracking | None = None) -> PreparedTraining:
    """Check the pairs, load the model training starts from (and, if needed, its reference copy) and
    build the DPOTrainer. ``pairs``: rows of ``<arm>.pairs.parquet``; ``objective``:
    ``PreferenceArm.objective()``; ``tracking``: where the trackers of ``train.report_to`` file this arm."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    if not pairs:
        raise HeredityError("cannot train on an empty set of preference pairs")
    if tc.method == "qlora":
        check_qlora(device)
    notes: list[str] = []
    if tc.packing:
        notes.append("train.packing does not apply to preference pairs: each pair is its own sequence")
    if device == "cpu":
        use_cpu_threads()
    tokenizer = load_tokenizer(start, padding_side="right")
    rows, validation = split_for_training(pairs, tc, unit="pairs")
    lengths = pair_lengths(tokenizer, rows)
    too_long = sum(n > tc.max_length for n in lengths)
    if too_long:
        notes.append(f"{too_long} of {len(rows)} pairs are longer than max_length={tc.max_length} tokens "
                     f"(longest {max(lengths)}); training sees only their first {tc.max_length} tokens")

    model = load_student(start, tc, device)
    model.train()
    peft_config, ref_model = lora_config(tc), None
    if peft_config is None and not objective["precompute_ref_log_probs"]:
        # loaded as heredity loads models (an embedded or adapter reference resolves here), not by TRL from
        # the policy's config path
        ref_model = load_model(start, device)
    args = DPOConfig(**shared_arguments(tc, device, work_dir, validating=bool(validation), tracking=tracking),
                     beta=objective["beta"], loss_type=list(objective["loss"]), loss_weights=objective["loss_weights"],
                     precompute_ref_log_probs=objective["precompute_ref_log_probs"])
    callbacks = trainer_callbacks(tc, device)
    meter = callbacks[0]

    def dataset(part: list[dict[str, Any]]):
        return Dataset.from_list([{c: p[c] for c in PAIR_COLUMNS} for p in part])

    with tensorboard_folder(tc, tracking):
        trainer = DPOTrainer(
            model=model, ref_model=ref_model, args=args, train_dataset=dataset(rows),
            eval_dataset=dataset(validation) if validation else None,
            processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
        )
    trainer.remove_callback(PrinterCallback)  # the log goes to train_log.parquet instead
    return PreparedTraining(trainer, tokenizer, meter, rows, validation, lengths, too_long, len(trainer.train_dataset),
                            notes)


def train_preference(start: str, pairs: list[dict[str, Any]], tc: TrainConfig, objective: dict[str, Any],
                     device: str, output: Path, work_dir: Path, resume_key: str | None = None,
                     cleanup_checkpoints: bool = True, tracking: Tracking | None = None) -> dict[str, Any]:
    """Train ``start`` on preference ``pairs`` and save it to ``output`` (see ``training.fit``)."""
    prepared = prepare_preference_training(start, pairs, tc, objective, device, work_dir, tracking)
    info = fit(prepared, start, tc, device, output, work_dir, resume_key, cleanup_checkpoints)
    info["objective"] = {"kind": "preference", **objective}
    info["pairs"] = len(prepared.rows)
    return info
