"""End to end: profile the embedded model on small real samples of every suite."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from heredity.models import load_model
from heredity.profile import (
    SUITES,
    profile_model,
    render_table,
    scoring_tokenizer,
    seat,
)

MODEL = "embedded:smollm2-135m-instruct"
LIMIT = 20


@pytest.fixture(scope="module")
def one_thread():
    # See test_profile_loglik.py: one thread is far faster on a CI machine with busy shared cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def in_range(metric: dict, lo: float, hi: float) -> bool:
    v = metric["value"]
    return v is not None and lo <= v <= hi


def test_profile_likelihood_suites(tmp_path, data_dir, one_thread):
    suites = ["calibration", "crows_pairs", "stereoset", "bbq"]
    result = profile_model(MODEL, suites, limit=LIMIT, out=tmp_path, data_dir=data_dir, bootstrap_samples=200)
    assert list(result["suites"]) == suites
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(result))
    for name in suites:
        summary = result["suites"][name]
        assert summary["n"] == LIMIT
        assert pq.read_table(tmp_path / f"{name}.parquet").num_rows == LIMIT
        for m in summary["metrics"].values():
            lo, hi = m["ci95"]
            assert m["value"] is None or lo is None or lo - 1e-9 <= m["value"] <= hi + 1e-9

    cal = result["suites"]["calibration"]["metrics"]
    assert in_range(cal["accuracy"], 0.15, 0.6)  # chance is 0.25; SmolLM2-135M is near 0.4
    assert in_range(cal["ece_1bin"], 0.0, 1.0) and in_range(cal["ece_10bin"], cal["ece_1bin"]["value"] - 1e-9, 1.0)
    assert in_range(cal["mean_confidence"], 0.25, 1.0)
    rows = pq.read_table(tmp_path / "calibration.parquet").to_pylist()
    assert all(abs(sum(r["probs"]) - 1) < 1e-6 and max(r["probs"]) == r["confidence"] for r in rows)

    crows = result["suites"]["crows_pairs"]
    assert in_range(crows["metrics"]["bias_pct"], 0.0, 100.0)
    assert sum(g["n"] for g in crows["groups"].values()) == LIMIT

    stereo = result["suites"]["stereoset"]["metrics"]
    assert in_range(stereo["lms"], 60.0, 100.0)  # a language model prefers meaningful sentences
    assert in_range(stereo["ss"], 0.0, 100.0)
    assert stereo["icat"]["value"] <= stereo["lms"]["value"] + 1e-9

    bbq = result["suites"]["bbq"]
    assert {g: v["n"] for g, v in bbq["groups"].items()} == {
        "Age": 5, "Disability_status": 5, "Nationality": 5, "Physical_appearance": 5}
    assert in_range(bbq["metrics"]["accuracy"], 0.0, 1.0)
    for key in ("bias_ambig", "bias_disambig"):
        assert bbq["metrics"][key]["value"] is None or -1.0 <= bbq["metrics"][key]["value"] <= 1.0
    assert bbq["n_no_target"] == 0

    assert render_table(result).row_count == sum(
        len(s["metrics"]) + sum(len(g["metrics"]) for g in s["groups"].values()) for s in result["suites"].values())


def test_seat_on_two_small_tests(data_dir, one_thread):
    model, tok = load_model(MODEL), scoring_tokenizer(MODEL)
    result = seat.run(model, tok, data_dir=data_dir, tests=["weat6", "weat8"], samples=100)
    assert result.summary["n"] == 2 and [r["test"] for r in result.rows] == ["weat6", "weat8"]
    for row in result.rows:
        assert np.isfinite(row["effect_size"]) and abs(row["effect_size"]) < 2.0  # |d| <= 2 for equal halves
        assert 0.0 < row["p_value"] <= 1.0
    assert "seat" in SUITES
