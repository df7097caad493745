"""One run per directory (a second process is refused while the first completes), and SIGKILL at
seeded random moments of generate/score/select, then resume: the same pool, scores and selection
as an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from heredity.core.rundir import LOCK

from .conftest import error_lines, invoke, replay_config

METRICS = ["words", "ttr", "mtld", "hdd", "mattr", "flesch-reading-ease"]


def slow_config(data_dir: Path) -> dict:
    """805 prompts × 3 replayed teachers, six metrics: a few seconds of work, no model."""
    cfg = replay_config(data_dir, n_prompts=805, score={"metrics": METRICS},
                        select={"metric": "words", "variants": {"fog": {"strategy": "best",
                                                                        "metric": "flesch-reading-ease"}}})
    cfg["teachers"].append({"backend": "replay", "replay": {"path": str(data_dir / "alpaca_eval" /
                                                                        "vicuna-7b-v1.5.json")}})
    return cfg


def start(config: Path, out: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "HEREDITY_SCORE_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "heredity.cli", "select", str(config), "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def tables(out: Path) -> dict[str, list]:
    names = ["generate/candidates.parquet", "score/scores.parquet", "select/passive.parquet",
             "select/active.parquet", "select/fog.parquet"]
    return {n: pq.read_table(out / n).to_pylist() for n in names}


def same(a: dict, b: dict) -> bool:
    # NaN != NaN: compare with NaN as a marker
    def clean(rows):
        return [{k: ("nan" if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows]
    return all(clean(a[n]) == clean(b[n]) for n in a) and a.keys() == b.keys()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir: Path):
    """The uninterrupted run, and how long it took."""
    folder = tmp_path_factory.mktemp("reference")
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(slow_config(data_dir)), encoding="utf-8")
    proc = start(config, folder / "run", folder / "cache.sqlite")
    wait_for_lock(proc, folder / "run")
    t0 = time.perf_counter()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    return config, tables(folder / "run"), time.perf_counter() - t0


def wait_for_lock(proc: subprocess.Popen, out: Path) -> None:
    """Until ``proc`` holds the run's lock: its checks passed and its stages begin."""
    deadline = time.time() + 120
    lock = out / LOCK
    while time.time() < deadline and proc.poll() is None:
        if lock.is_file() and f'"pid": {proc.pid}' in lock.read_text(errors="replace"):
            return
        time.sleep(0.005)


def test_a_second_run_on_the_same_directory_is_refused_while_the_first_completes(tmp_path, reference):
    config, expected, _ = reference
    out = tmp_path / "run"
    first = start(config, out, tmp_path / "cache.sqlite")
    wait_for_lock(first, out)
    assert first.poll() is None, "the first run ended before the second started"
    code, output = invoke("select", config, "--out", out)
    lines = error_lines(output)
    assert code == 1 and len(lines) == 1 and "Traceback" not in output, output
    assert lines[0].startswith(f"error: {out}: another heredity run is using this directory (pid {first.pid} on ")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert same(tables(out), expected)  # the refused run changed nothing


@pytest.mark.parametrize("seed", range(6))
def test_sigkill_at_a_random_moment_then_resume_gives_the_uninterrupted_result(seed, tmp_path, reference):
    from heredity.pipeline import run
    from heredity.plan import load_config

    config, expected, seconds = reference
    out, cache = tmp_path / "run", tmp_path / "cache.sqlite"
    proc = start(config, out, cache)
    wait_for_lock(proc, out)
    time.sleep(random.Random(seed).uniform(0, seconds))  # somewhere in generate, score or select
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = [s for s in ("prompts", "generate", "score", "select") if (out / s / "manifest.json").is_file()]
    print(f"seed {seed}: killed after {finished or 'nothing'}")  # shows where the kill landed (pytest -s)
    os.environ["HEREDITY_SCORE_CACHE"] = str(cache)  # the killed run's cache: it must still be sound
    try:
        run(load_config(config), out, until="select")
    finally:
        os.environ.pop("HEREDITY_SCORE_CACHE")
    assert same(tables(out), expected)
    for stage in ("prompts", "generate", "score", "select"):
        assert json.loads((out / stage / "manifest.json").read_text())["status"] == "complete"
