"""The selection heredity exports is what TRL's SFTTrainer reads, with no conversion step.

A replayed AlpacaEval pool goes through the real select stage; its ``active.jsonl`` and a
prompt-completion Parquet export of the same rows are loaded with ``datasets`` as any user
would and handed to SFTTrainer with the embedded student. The check is on what TRL prepared
(tokens of the conversation, loss mask on the answer) and one real optimiser step.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from heredity.pipeline import run
from heredity.plan import config_from_dict
from heredity.strategies import export_selection

pytestmark = pytest.mark.slow  # tens of seconds: scheduled first (tests/conftest.py)

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

STUDENT = "embedded:smollm2-135m-instruct"


@pytest.fixture(scope="module")
def selected(data_dir: Path, tmp_path_factory) -> Path:
    """A select stage over two replayed AlpacaEval teachers, 6 prompts."""
    alpaca = data_dir / "alpaca_eval"
    out = tmp_path_factory.mktemp("sft") / "run"
    cfg = config_from_dict({
        "prompts": {"source": str(alpaca / "gpt-3.5-turbo-0613.json"), "field": "instruction",
                    "id_field": None, "eval_every": None, "limit_train": 6},
        "teachers": [{"backend": "replay", "replay": {"path": str(alpaca / f"{name}.json")}}
                     for name in ("alpaca-7b", "zephyr-7b-beta")],
        "k": 1,
        "score": {"metrics": ["words"]},
        "select": {"target": "words", "direction": "max"},
    })
    run(cfg, out, until="select")
    return out / "select"


def trainer_for(dataset, tmp_path: Path):
    from trl import SFTConfig, SFTTrainer

    from heredity.core.models import load_model, load_tokenizer

    args = SFTConfig(output_dir=str(tmp_path / "trainer"), max_steps=1, per_device_train_batch_size=2,
                     max_length=256, learning_rate=1e-5, report_to="none", use_cpu=True, save_strategy="no",
                     disable_tqdm=True, dataloader_num_workers=0, logging_steps=1)
    return SFTTrainer(model=load_model(STUDENT), args=args, train_dataset=dataset,
                      processing_class=load_tokenizer(STUDENT))


def test_sft_trainer_reads_the_select_stage_jsonl(selected: Path, tmp_path: Path):
    chat = selected / "active.jsonl"
    winners = pq.read_table(selected / "active.parquet").to_pylist()
    assert len(winners) == 6
    dataset = datasets.load_dataset("json", data_files=str(chat), split="train")
    assert dataset.column_names == ["messages"]

    trainer = trainer_for(dataset, tmp_path)
    prepared, tokenizer = trainer.train_dataset, trainer.processing_class
    assert len(prepared) == 6 and {"input_ids", "labels"} <= set(prepared.column_names)
    for row, winner in zip(prepared, winners):
        text = tokenizer.decode(row["input_ids"])
        # TRL applied the student's chat template around the user turn and the selected answer
        assert text.startswith("<|im_start|>")
        assert winner["prompt"][:40] in text and winner["text"][:30] in text
        # a "messages" dataset trains on the whole conversation, as to_chat_rows documents
        assert row["labels"] == row["input_ids"]


def test_sft_trainer_trains_on_a_prompt_completion_parquet_export_with_the_prompt_masked(
        selected: Path, tmp_path: Path):
    winners = pq.read_table(selected / "active.parquet").to_pylist()
    path = export_selection(winners, tmp_path / "active.parquet", fmt="prompt-completion", metadata=True)
    dataset = datasets.load_dataset("parquet", data_files=str(path), split="train")
    assert set(dataset.column_names) == {"prompt", "completion", "prompt_id", "teacher", "sample_index"}

    trainer = trainer_for(dataset, tmp_path)
    prepared, tokenizer = trainer.train_dataset, trainer.processing_class
    assert len(prepared) == 6 and {"input_ids", "labels"} <= set(prepared.column_names)
    for row, winner in zip(prepared, winners):
        ids, labels = row["input_ids"], row["labels"]
        # TRL folds the completion mask into labels: -100 on the prompt, the token on the answer
        learned = [t for t, label in zip(ids, labels) if label != -100]
        assert learned == [label for label in labels if label != -100]
        assert 0 < len(learned) < len(ids)
        answer = tokenizer.decode(learned)
        prompt = tokenizer.decode([t for t, label in zip(ids, labels) if label == -100])
        assert answer.startswith(winner["text"][:30])
        assert winner["prompt"][:40] in prompt and winner["text"][:30] not in prompt
    # the metadata columns ride along without breaking batching: one real optimiser step
    result = trainer.train()
    assert result.global_step == 1 and math.isfinite(result.training_loss)
