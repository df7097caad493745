"""Shared fixtures: where the real data lives, and small run configs for the real model."""

from __future__ import annotations

from pathlib import Path

import pytest

from heredity.core.datasets import default_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = default_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path


def tiny_config(**overrides) -> dict:
    """A run small enough for CI on 2 cores, still with the real model and real training."""
    cfg = {
        "name": "tiny",
        "prompts": {"source": "bundled:quickstart", "limit_train": 6, "limit_eval": 4},
        "teachers": [{"model": "embedded:smollm2-135m-instruct",
                      "sampling": {"temperature": 1.0, "max_new_tokens": 24, "seed": 0}}],
        "k": 2,
        "score": {"metrics": ["length", "mtld"]},
        "select": {"metric": "length", "direction": "max"},
        "train": {"epochs": 1, "batch_size": 6, "learning_rate": 1e-4, "max_length": 128},
        "eval": {"max_new_tokens": 24, "bootstrap_samples": 200},
    }
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if field:
            cfg[section][field] = value
        else:
            cfg[section] = value
    return cfg


@pytest.fixture(scope="session")
def alpaca_texts(data_dir: Path) -> list[str]:
    """All 9,660 AlpacaEval outputs (12 models × 805 instructions)."""
    import json

    files = sorted((data_dir / "alpaca_eval").glob("*.json"))
    if not files:
        pytest.skip(f"no alpaca_eval data under {data_dir}")
    return [row["output"] for path in files for row in json.loads(path.read_text(encoding="utf-8"))]
