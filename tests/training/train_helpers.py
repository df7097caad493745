"""Shared pieces of the train-stage tests: real data, configs and a ready select stage.

Not a conftest: a second conftest.py without a package would shadow tests/conftest.py,
which other test modules import by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from heredity.config import RunConfig, SelectConfig, TrainConfig
from heredity.core.rundir import Stage, stable_hash, write_table

STUDENT = "embedded:smollm2-135m-instruct"
ALPACA = "alpaca_eval"


def train_config(**settings: Any) -> TrainConfig:
    return TrainConfig(**settings)


def run_config(train: TrainConfig, preference: dict[str, Any] | None = None) -> RunConfig:
    """The student on CPU with ``train``; ``preference`` ({arm: PreferenceArm fields}) adds preference arms."""
    cfg = RunConfig(student=STUDENT, device="cpu")
    cfg.train = train
    if preference:
        cfg.select = SelectConfig(preference=preference)
    return cfg


def alpaca(data_dir: Path, name: str) -> list[dict[str, Any]]:
    """One model's AlpacaEval answers (committed excerpt: the first 50 instructions)."""
    return json.loads((data_dir / ALPACA / f"{name}.json").read_text(encoding="utf-8"))


# The model whose answers short_pairs prefers: gpt-3.5-turbo's, these tests' original source.
PREFERRED = "gpt-3.5-turbo-0613"


def short_pairs(data_dir: Path, tokenizer, n: int, max_tokens: int = 60, skip: int = 0) -> list[dict[str, str]]:
    """``n`` real prompt/answer pairs from AlpacaEval that fit in ``max_tokens``, one per instruction.

    Per instruction (file order), the first answer that fits: gpt-3.5-turbo's if it does, else the
    other models' in name order. Pooling the 12 models' answers is what makes the excerpt's 50
    instructions enough: gpt-3.5-turbo alone answers only 2 of them within 60 tokens, the pool 22
    (10 within 40). The prompts stay distinct, so a row is known by its prompt. Fewer pairs than
    asked for is an error, never a silently smaller test.
    """
    models = [PREFERRED] + sorted(p.stem for p in (data_dir / ALPACA).glob("*.json") if p.stem != PREFERRED)
    rows = []
    for answers in zip(*(alpaca(data_dir, m) for m in models), strict=True):
        assert len({a["instruction"] for a in answers}) == 1, "the answer files list the instructions in one order"
        for item in answers:
            size = len(tokenizer(item["instruction"])["input_ids"]) + len(tokenizer(item["output"])["input_ids"])
            if size <= max_tokens and len(item["output"]) > 20:
                rows.append({"prompt": item["instruction"], "text": item["output"]})
                break
    rows = rows[skip:skip + n]
    assert len(rows) == n, f"only {len(rows)} AlpacaEval answers within {max_tokens} tokens (asked for {n})"
    return rows


def make_select(run_dir: Path, arms: dict[str, list[dict[str, str]]],
                pairs: dict[str, list[dict[str, Any]]] | None = None) -> Stage:
    """A finished select stage holding the given rows per arm, as select.py leaves it; ``pairs``:
    preference arms' rows in the ``<arm>.pairs.parquet`` schema."""
    pairs = pairs or {}
    stage = Stage(run_dir, "select", {"test": stable_hash([arms, pairs])})
    stage.start()
    for arm, rows in arms.items():
        write_table(stage.dir / f"{arm}.parquet", [{"prompt_id": str(i), **r} for i, r in enumerate(rows)])
    for arm, rows in pairs.items():
        write_table(stage.dir / f"{arm}.pairs.parquet", rows)
    hashes = {arm: stable_hash([(r["prompt"], r["text"]) for r in rows]) for arm, rows in arms.items()}
    hashes.update({arm: stable_hash(rows) for arm, rows in pairs.items()})
    stage.finish({arm: f"{arm}.parquet" for arm in arms}, data_hashes=hashes)
    return stage


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """Train with one torch thread (import this fixture into each test module).

    These tests run on small shared CPU machines, where a second torch thread waiting for a
    descheduled first one made training steps about three times slower, not faster. Training
    (heredity.training.sft) leaves the thread count alone when OMP_NUM_THREADS is set; the env
    var also reaches the resume test's subprocess. Module scope, so it is in place before the module's training
    fixtures run.
    """
    import torch

    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        yield
    torch.set_num_threads(before)


def kill_after_first_checkpoint(proc, checkpoints: Path, log_file: Path) -> None:
    """SIGKILL ``proc`` once ``checkpoints/checkpoint-1`` is complete (its trainer_state.json parses: a
    kill while that file is half-written leaves a checkpoint that is rightly not resumed)."""
    import os
    import signal
    import time

    from heredity.training.checkpoints import is_complete

    try:
        deadline = time.monotonic() + 600
        while not is_complete(checkpoints / "checkpoint-1"):
            assert proc.poll() is None, log_file.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
