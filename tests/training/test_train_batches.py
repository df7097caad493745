"""What the student is actually trained on: the batches TRL builds from a selection.

No training step runs here; the trainer is built (TRL tokenises the data) and its first
batches are read back. The loss must cover the assistant's answer only, inside the student's
chat template, and the step plan must count the sequences TRL makes, packed or not.
"""

from __future__ import annotations

import pytest
import torch
from train_helpers import (  # noqa: F401 (one_cpu_thread is an autouse fixture)
    STUDENT,
    one_cpu_thread,
    short_pairs,
    train_config,
)

from heredity.training.sft import prepare_training
from heredity.training.steps import training_sequences

SYSTEM = "Answer in plain English."


@pytest.fixture(scope="module")
def rows(data_dir, tokenizer):
    return short_pairs(data_dir, tokenizer, 6)


def test_loss_covers_the_assistant_answer_only_in_the_chat_template(tmp_path, rows, tokenizer):
    prepared = prepare_training(STUDENT, rows, train_config(batch_size=3, max_length=128), SYSTEM, "cpu", tmp_path)
    answers = {r["prompt"]: r["text"] for r in rows}
    seen = 0
    for batch in prepared.trainer.get_train_dataloader():
        for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
            real = mask.bool()
            text = tokenizer.decode(ids[real])
            learnt = labels != -100
            # The chat template is applied: system, user and assistant turns with their markers.
            assert text.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"), text
            prompt = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
            assert "<|im_start|>assistant\n" in text
            # Labels are the input ids exactly where the answer is, -100 everywhere else
            # (system prompt, user turn, the assistant header, padding).
            assert torch.equal(labels[learnt], ids[learnt])
            assert not learnt[~real].any()
            first = int(learnt.nonzero()[0])
            assert not learnt[:first].any() and learnt[first:int(real.sum())].all()
            assert tokenizer.decode(ids[:first]).endswith("<|im_start|>assistant\n")
            assert tokenizer.decode(ids[learnt]).strip() == answers[prompt].strip() + "<|im_end|>"
            seen += 1
    assert seen == len(rows)


def test_step_plan_counts_the_sequences_trl_trains_on(tmp_path, rows, tokenizer):
    # A prompt that alone fills max_length: TRL drops it unpacked, keeps its cut-off part packed.
    filler = {"prompt": "Summarise: " + "the quick brown fox jumps over the lazy dog " * 12, "text": "A fox."}
    data = rows + [filler]
    made = {}
    for packing, max_length in ((False, 96), (True, 256)):
        tc = train_config(batch_size=2, max_length=max_length, packing=packing)
        prepared = prepare_training(STUDENT, data, tc, None, "cpu", tmp_path / str(packing))
        made[packing] = len(prepared.trainer.train_dataset)
        assert training_sequences(tokenizer, data, tc, None) == made[packing], packing
    assert made[False] == len(rows)  # the filler was dropped
    assert made[True] < len(data)  # packed: fewer, fuller sequences
