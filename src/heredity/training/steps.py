"""Step counting: the train stage's key, the validation split, and how many sequences and
optimiser steps the trainer will take for a set of rows (counted as TRL and transformers count
them, so arms can be given equal steps before any of them trains)."""

from __future__ import annotations

import hashlib
import math
from typing import Any

from heredity.config import TrainConfig
from heredity.errors import HeredityError
from heredity.strategies import to_chat_rows

# How often checkpoints are written changes nothing in the trained model, so these fields
# stay out of the stage key: changing them must not retrain a finished arm. Nor does where the
# metrics are reported (`report_to`): a tracker only watches the same steps, so adding one to a
# finished run reuses its arms (their losses stay in train_log.parquet) rather than retraining.
NOT_IN_KEY = {"save_steps", "save_total_limit", "seeds",  # a replicate trains with its own `seed`
              "report_to", "gradient_checkpointing"}  # recomputing activations gives the same model

# Fields added after runs already existed: left out of the key while at their default, so
# upgrading heredity does not retrain arms that were trained without them.
KEY_WHEN_SET = {"max_steps": None, "packing": False, "eval_fraction": 0.0, "eval_steps": 20,
                "early_stopping_patience": None, "distributed": None, "merge_lora": True, "bf16": None}


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
    if fraction <= 0:
        return rows, []
    train, validation = [], []
    for row in rows:
        digest = hashlib.sha256(f"{seed}:{row['prompt_id']}".encode()).digest()
        (validation if int.from_bytes(digest[:8], "big") / 2**64 < fraction else train).append(row)
    return train, validation



def split_for_training(rows: list[dict[str, Any]], tc: TrainConfig, unit: str = "examples"
                       ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``split_validation`` with ``tc``'s fraction and seed, refusing a split that leaves either side
    empty (``unit`` names what the rows are in the message: examples, pairs)."""
    train, validation = split_validation(rows, tc.eval_fraction, tc.seed)
    if tc.eval_fraction and (not validation or not train):
        raise HeredityError(f"train.eval_fraction={tc.eval_fraction} leaves {len(train)} training and "
                            f"{len(validation)} validation {unit}; both need at least one")
    return train, validation


# TRL's default packing (best-fit decreasing, overflow cut): named so the step plan packs alike.
PACKING_STRATEGY = "bfd"


def to_sft_rows(rows: list[dict[str, Any]], system_prompt: str | None) -> list[dict[str, Any]]:
    """Conversational prompt/completion rows: TRL then computes the loss on the answer only."""
    return to_chat_rows(rows, system_prompt, fmt="prompt-completion")


def token_lengths(tokenizer, sft_rows: list[dict[str, Any]]) -> list[int]:
    """Tokens of each whole conversation (system, prompt and answer), as the trainer sees it."""
    texts = [
        tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False) for r in sft_rows
    ]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def chat_ids(tokenizer, messages: list[dict[str, str]], **kwargs) -> list[int]:
    """Token ids of ``messages``, tokenised as TRL's SFTTrainer tokenises conversations (so the
    counts below match its own)."""
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
            prompt = chat_ids(tokenizer, r["prompt"], add_generation_prompt=True)
            whole = chat_ids(tokenizer, r["prompt"] + r["completion"])
            shared = next((i for i, (a, b) in enumerate(zip(prompt, whole)) if a != b), min(len(prompt), len(whole)))
            kept += shared < min(len(whole), tc.max_length)  # some answer token survives truncation
        return kept
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    ids = [chat_ids(tokenizer, r["prompt"] + r["completion"]) for r in sft_rows]
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
