"""train.seeds: every arm trained once per seed in one run directory, the stages that no seed
changes shared, one summary whose CIs resample prompts and seeds, and a rerun that reuses it all."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from heredity.pipeline import run, replicate_config
from heredity.plan import config_from_dict

from conftest import tiny_config

pytestmark = pytest.mark.slow


def seeds_config(**extra) -> dict:
    cfg = tiny_config(**{"prompts.limit_train": 4, "prompts.limit_eval": 3})
    cfg["train"]["seeds"] = [0, 1]
    cfg["eval"]["max_new_tokens"] = 12
    cfg.update(extra)
    return cfg


def test_replicate_configs_reseed_training_and_every_random_passive_draw():
    cfg = config_from_dict(seeds_config(select={"target": "length", "passive": {
        "strategy": "threshold", "metric": "length", "op": "<=", "value": 100, "then": {"strategy": "random", "seed": 7}}}))
    first, second = replicate_config(cfg, 0), replicate_config(cfg, 1)
    assert (first.train.seed, second.train.seed) == (0, 1) and first.train.seeds is None
    assert first.select.passive.as_dict()["then"]["seed"] == 7 and second.select.passive.as_dict()["then"]["seed"] == 8
    default = config_from_dict(seeds_config())
    assert [replicate_config(default, i).select.seed for i in (0, 1)] == [0, 1]


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("seeds") / "run"
    summary = run(config_from_dict(seeds_config()), out, Console(file=io.StringIO()))
    return out, summary


def test_each_seed_trains_every_arm_and_shares_what_no_seed_changes(seeded_run):
    out, summary = seeded_run
    second = out / "seeds" / "seed-1"
    for arm in ("passive", "active"):
        assert (out / "train" / arm / "model").is_dir() and (second / "train" / arm / "model").is_dir()
        train = json.loads((second / "train" / arm / "manifest.json").read_text())
        assert train["key"] != json.loads((out / "train" / arm / "manifest.json").read_text())["key"]
    # the pool and the base student's answers were computed once: the same files, linked
    for shared in ("generate/candidates.parquet", "score/scores.parquet", "evaluate/base/answers.parquet"):
        assert os.path.samefile(out / shared, second / shared), shared
    # each replicate drew its passive data with its own seed (on 4 prompts × 2 candidates two seeds
    # may still pick the same rows, so the rule and the stage key are what must differ)
    cards = [json.loads((d / "select" / "card.json").read_text()) for d in (out, second)]
    keys = [json.loads((d / "select" / "manifest.json").read_text())["key"] for d in (out, second)]
    assert keys[0] != keys[1]
    assert [c["rules"]["passive"] for c in cards] == [{"strategy": "random", "seed": s} for s in (0, 1)]
    assert summary["seeds"]["values"] == [0, 1]
    assert [summary["seeds"]["per_seed"][s]["selection_seed"] for s in ("0", "1")] == [0, 1]
    assert json.loads((out / "seeds" / "seed-0" / "summary.json").read_text())["arms"] == summary["seeds"]["per_seed"]["0"]["arms"]


def test_the_summary_pools_seeds_and_its_ci_resamples_them(seeded_run):
    out, summary = seeded_run
    for name, per_metric in summary["differences"].items():
        for metric, d in per_metric.items():
            per_seed = [summary["seeds"]["per_seed"][s]["differences"][name][metric]["diff"] for s in ("0", "1")]
            if d["n_undefined"] == 0:
                assert d["diff"] == pytest.approx(np.mean(per_seed))  # every seed answers the same prompts
            assert d["seeds"] == 2 and d["per_seed"] == pytest.approx(per_seed)
            assert d["family"] in ("primary", "exploratory")
    assert summary["differences"]["active_vs_passive"]["length"]["family"] == "primary"
    assert summary["arms"]["base"] == summary["seeds"]["per_seed"]["0"]["arms"]["base"]
    rows = pq.read_table(out / "per_prompt.parquet").to_pylist()
    assert {r["seed"] for r in rows} == {0, 1} and len(rows) == 2 * 3 * 3  # seeds × arms × prompts
    report = (out / "report.md").read_text()
    assert "## Training seeds (2: 0, 1)" in report and "prompts and training seeds" in report


def test_a_rerun_reuses_every_seed(seeded_run):
    out, summary = seeded_run
    log = io.StringIO()
    again = run(config_from_dict(seeds_config()), out, Console(file=log, width=200))
    assert " done in " not in log.getvalue()  # every stage of every seed reused
    assert again["differences"] == summary["differences"]
