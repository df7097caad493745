"""One run per directory (a second process is refused while the first completes), and SIGKILL at
seeded random moments of generate, score and select, then resume: the same pool, scores and
selection as an uninterrupted run."""

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

METRICS = ["words", "ttr", "mtld", "hdd", "mattr", "flesch-reading-ease", "gunning-fog", "distinct-2"]
# The stages a kill is aimed at, in turn by seed, and the stage before each.
STAGES = ("prompts", "generate", "score", "select")
KILLED_STAGES = STAGES[1:]


def slow_config(data_dir: Path) -> dict:
    """Every instruction of the AlpacaEval excerpt × every model's answer replayed (12 teachers: the
    largest real pool the excerpt holds, 600 candidates), eight metrics: seconds of work, no model."""
    answers = sorted((data_dir / "alpaca_eval").glob("*.json"))
    n_prompts = len(json.loads((data_dir / "alpaca_eval" / "gpt-3.5-turbo-0613.json").read_text(encoding="utf-8")))
    cfg = replay_config(data_dir, n_prompts=n_prompts, score={"metrics": METRICS},
                        select={"target": "words", "variants": {"fog": {"strategy": "best",
                                                                        "metric": "flesch-reading-ease"}}})
    cfg["teachers"] = [{"backend": "replay", "replay": {"path": str(path)}} for path in answers]
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
    """The uninterrupted run, and how long each of its steps took: from the previous stage's manifest
    to its own (a step's work starts before its folder does: generate reads the replayed files)."""
    folder = tmp_path_factory.mktemp("reference")
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(slow_config(data_dir)), encoding="utf-8")
    out = folder / "run"
    proc = start(config, out, folder / "cache.sqlite")
    done: dict[str, float] = {}
    deadline = time.perf_counter() + 300
    while proc.poll() is None:
        assert time.perf_counter() < deadline, "the reference run took over 5 minutes"
        for stage in STAGES:
            if stage not in done and (out / stage / "manifest.json").is_file():
                done[stage] = time.perf_counter()
        time.sleep(0.0005)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert list(done) == list(STAGES), done  # each manifest seen as it was written
    expected = tables(out)
    candidates = expected["generate/candidates.parquet"]
    teachers = len(slow_config(data_dir)["teachers"])
    # every teacher answered every prompt
    assert len(candidates) == teachers * len({r["prompt_id"] for r in candidates})
    seconds = {stage: done[stage] - done[before] for before, stage in zip(STAGES, KILLED_STAGES)}
    return config, expected, seconds


def wait_for_lock(proc: subprocess.Popen, out: Path) -> None:
    """Until ``proc`` holds the run's lock: its checks passed and its stages begin."""
    deadline = time.time() + 120
    lock = out / LOCK
    while time.time() < deadline and proc.poll() is None:
        if lock.is_file() and f'"pid": {proc.pid}' in lock.read_text(errors="replace"):
            return
        time.sleep(0.005)


def wait_for_manifest(proc: subprocess.Popen, out: Path, stage: str) -> None:
    """Until ``proc`` has finished ``stage`` (its manifest exists)."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (out / stage / "manifest.json").is_file():
        time.sleep(0.0005)


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
    target = KILLED_STAGES[seed % len(KILLED_STAGES)]
    out, cache = tmp_path / "run", tmp_path / "cache.sqlite"
    proc = start(config, out, cache)
    wait_for_lock(proc, out)
    # A random moment of the target step: once the stage before it is finished, within the time the
    # step took uninterrupted. Drawn over the whole run instead, kills land in score (seconds, mostly
    # its readability dictionary's loading) or after the run is over: generate and select take a few
    # hundredths of a second each on this pool (a replayed pool has no generation to wait for).
    wait_for_manifest(proc, out, STAGES[STAGES.index(target) - 1])
    time.sleep(random.Random(seed).uniform(0, seconds[target]))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The kill interrupted the run: after select the CLI still prints the selection card and exits
    # (over a second here), so even a kill aimed at the end of score finds the process running.
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    finished = [s for s in STAGES if (out / s / "manifest.json").is_file()]
    # shows where the kill landed (pytest -s)
    print(f"seed {seed}: aimed at {target} ({seconds[target]:.3f} s uninterrupted), killed after {finished}")
    os.environ["HEREDITY_SCORE_CACHE"] = str(cache)  # the killed run's cache: it must still be sound
    try:
        run(load_config(config), out, until="select")
    finally:
        os.environ.pop("HEREDITY_SCORE_CACHE")
    assert same(tables(out), expected)
    for stage in STAGES:
        assert json.loads((out / stage / "manifest.json").read_text())["status"] == "complete"
