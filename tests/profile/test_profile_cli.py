"""`heredity profile` through the command line: the printed table, summary.json, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import heredity
from heredity.profile import _fmt

MODEL = "embedded:smollm2-135m-instruct"


def heredity_profile(*args: str) -> subprocess.CompletedProcess:
    # the subprocess must import the heredity under test, not another installed copy
    src = str(Path(heredity.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "200", "OMP_NUM_THREADS": "1",
           # data missing locally is looked for in datasets' cache only: no download during tests
           "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "heredity.cli", "profile", *args], capture_output=True, text=True,
                          check=False, timeout=600, env=env)


def table_rows(stdout: str) -> list[list[str]]:
    """The rows of the rich table (cells stripped), the header first."""
    rows = []
    for line in stdout.splitlines():
        for bar in ("┃", "│"):  # rich draws the header's bars heavier
            if line.startswith(bar):
                rows.append([c.strip() for c in line.split(bar)[1:-1]])
    return rows


def test_profile_command_prints_the_table_and_writes_the_summary(tmp_path, data_dir):
    out = tmp_path / "profile"
    result = heredity_profile(MODEL, "--suite", "crows_pairs", "--suite", "calibration", "--limit", "5",
                              "--suite-limit", "crows_pairs=3", "--out", str(out), "--data-dir", str(data_dir), "--threads", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["suites"]) == ["calibration", "crows_pairs"]  # registry order, not argument order
    assert summary["limit"] == 5 and summary["limits"] == {"crows_pairs": 3} and summary["model"] == MODEL
    assert "calibration: 5 items in" in result.stderr and "crows_pairs: 3 pairs in" in result.stderr

    # the figures are those of the per-item files
    calibration = pq.read_table(out / "calibration.parquet").to_pylist()
    crows = pq.read_table(out / "crows_pairs.parquet").to_pylist()
    assert (len(calibration), len(crows)) == (5, 3)
    cal = summary["suites"]["calibration"]["metrics"]
    assert cal["accuracy"]["value"] == pytest.approx(np.mean([r["correct"] for r in calibration]))
    assert cal["mean_confidence"]["value"] == pytest.approx(np.mean([r["confidence"] for r in calibration]))
    cp = summary["suites"]["crows_pairs"]
    assert cp["metrics"]["bias_pct"]["value"] == pytest.approx(100 * np.mean([r["prefers_more"] for r in crows]))
    assert {g: v["n"] for g, v in cp["groups"].items()} == {
        t: sum(r["bias_type"] == t for r in crows) for t in {r["bias_type"] for r in crows}}

    # one printed row per figure of summary.json, with its value, CI and n
    expected = []
    for suite, s in summary["suites"].items():
        first = True  # the suite's name heads its section only
        for group, metrics, n in [("all", s["metrics"], s["n"])] + [(g, v["metrics"], v["n"]) for g, v in s["groups"].items()]:
            for metric, m in metrics.items():
                ci = "" if m["ci95"][0] is None else f"[{_fmt(m['ci95'][0])}, {_fmt(m['ci95'][1])}]"
                expected.append([suite if first else "", group, metric, _fmt(m["value"]), ci, str(m.get("n", n))])
                first = False
    rows = table_rows(result.stdout)
    assert rows[0] == ["suite", "group", "metric", "value", "95% CI", "n"]
    assert rows[1:] == expected
    # a per-direction figure counts its own pairs, not the sample
    by_metric = {tuple(e[:3]): r for e, r in zip(expected, rows[1:])}
    for direction in ("stereo", "antistereo"):
        assert by_metric[("", "all", f"{direction}_pct")][5] == str(
            sum(r["direction"] == direction for r in crows))


@pytest.mark.parametrize("args, message", [
    (["--suite", "nosuch"], "error: unknown profile suite 'nosuch'; known: all, calibration,"),
    # no such folder, or a folder without the suite's files: every place looked is named (after the
    # model is loaded: a folder may hold some suites' data and not others')
    (["--suite", "crows_pairs", "--data-dir", "/nonexistent/heredity-data"],
     "error: crows_pairs (CrowS-Pairs): benchmark data not found; looked in "
     "/nonexistent/heredity-data/crows_pairs/crows_pairs_anonymized.csv (shared layout); "
     "/nonexistent/heredity-data/nyu-mll/crows_pairs/default/test.jsonl|.parquet (hub schema); "
     "the hub: nyu-mll/crows_pairs@refs/convert/parquet (test): cannot load from the hub"),
    (["--suite", "crows_pairs", "--data-dir", "{empty}"], "crows_pairs_anonymized.csv (shared layout)"),
    (["--suite", "bbq", "--suite-limit", "bbq=0"], "error: --suite-limit 'bbq=0': expected SUITE=N with N >= 1"),
    (["--suite", "bbq", "--suite-limit", "seat=2"],
     "error: a limit is given for profile suite 'seat', which is not profiled; profiled: bbq"),
])
def test_bad_input_is_one_line_without_traceback(tmp_path, args, message):
    args = [a.replace("{empty}", str(tmp_path)) for a in args]
    result = heredity_profile(MODEL, "--limit", "2", *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert lines[0].startswith("error: ")
