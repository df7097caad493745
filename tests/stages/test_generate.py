"""The generate stage: content-keyed candidates, incremental growth, and resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from heredity.pipeline import run
from heredity.plan import config_from_dict

pytestmark = pytest.mark.slow


def gen_config(k: int = 2, train: int = 3, batch_size: int = 64, teachers=None, max_new_tokens: int = 12) -> dict:
    return {
        "prompts": {"source": "bundled:quickstart", "limit_train": train},
        "teachers": teachers or [{"model": "embedded:smollm2-135m-instruct", "batch_size": batch_size,
                                  "sampling": {"temperature": 1.0, "max_new_tokens": max_new_tokens}}],
        "k": k,
        "score": {"metrics": ["words"]},
        "select": {"target": "words"},
    }


def pool(out: Path) -> list[dict]:
    return pq.read_table(out / "generate" / "candidates.parquet").to_pylist()


def test_raising_k_generates_only_the_new_samples(tmp_path: Path):
    out = tmp_path / "run"
    run(config_from_dict(gen_config(k=2)), out, until="generate")
    first = {r["candidate_key"]: r["text"] for r in pool(out)}
    run(config_from_dict(gen_config(k=4)), out, until="generate")
    manifest = json.loads((out / "generate" / "manifest.json").read_text())
    assert manifest["counts"] == {"candidates": 12, "generated_now": 6, "replayed": 0, "reused": 6}
    grown = pool(out)
    assert {r["candidate_key"]: r["text"] for r in grown if r["sample_index"] < 2} == first
    assert sorted(r["sample_index"] for r in grown) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


@pytest.fixture
def sent_seeds(monkeypatch) -> list[int]:
    """The seed of every request that reaches the transformers backend (which still generates).

    A candidate's seed derives from its content key, so the seeds name exactly which
    candidates were generated, independently of the counts the stage reports about itself.
    """
    from heredity.backends.transformers_backend import TransformersBackend

    seeds: list[int] = []
    real = TransformersBackend.generate

    def counting(self, requests, sampling):
        seeds.extend(r.seed for r in requests)
        return real(self, requests, sampling)

    monkeypatch.setattr(TransformersBackend, "generate", counting)
    return seeds


def test_adding_a_teacher_generates_only_its_candidates(tmp_path: Path, sent_seeds: list[int]):
    first_teacher = {"model": "embedded:smollm2-135m-instruct", "sampling": {"temperature": 1.0, "max_new_tokens": 4}}
    second_teacher = {"model": "embedded:smollm2-135m-instruct", "name": "cool",
                      "sampling": {"temperature": 0.5, "max_new_tokens": 4}}
    out = tmp_path / "run"
    run(config_from_dict(gen_config(k=2, teachers=[first_teacher])), out, until="generate")
    first = {r["candidate_key"]: r["text"] for r in pool(out)}
    assert len(sent_seeds) == 6
    sent_seeds.clear()

    run(config_from_dict(gen_config(k=2, teachers=[first_teacher, second_teacher])), out, until="generate")
    manifest = json.loads((out / "generate" / "manifest.json").read_text())
    assert manifest["counts"] == {"candidates": 12, "generated_now": 6, "replayed": 0, "reused": 6}
    # only the teacher that generated in this run has a wall time: the cost table's figure
    assert list(manifest["teacher_seconds"]) == ["cool"] and manifest["teacher_seconds"]["cool"] > 0
    grown = pool(out)
    new = [r for r in grown if r["teacher"] == "cool"]
    assert len(new) == 6 and len({r["candidate_key"] for r in new}) == 6
    # the model was asked for the new teacher's six candidates and nothing else
    assert sorted(sent_seeds) == sorted(r["seed"] for r in new)
    assert {r["candidate_key"]: r["text"] for r in grown if r["teacher"] != "cool"} == first


def test_adding_prompts_generates_only_their_candidates(tmp_path: Path, sent_seeds: list[int]):
    out = tmp_path / "run"
    run(config_from_dict(gen_config(k=2, train=2, max_new_tokens=4)), out, until="generate")
    first = {r["candidate_key"]: r["text"] for r in pool(out)}
    old_prompts = {r["prompt_id"] for r in pool(out)}
    assert len(sent_seeds) == 4
    sent_seeds.clear()

    run(config_from_dict(gen_config(k=2, train=4, max_new_tokens=4)), out, until="generate")
    manifest = json.loads((out / "generate" / "manifest.json").read_text())
    assert manifest["counts"] == {"candidates": 8, "generated_now": 4, "replayed": 0, "reused": 4}
    grown = pool(out)
    new = [r for r in grown if r["prompt_id"] not in old_prompts]
    assert len({r["prompt_id"] for r in new}) == 2 and len(new) == 4
    assert sorted(sent_seeds) == sorted(r["seed"] for r in new)
    assert {r["candidate_key"]: r["text"] for r in grown if r["prompt_id"] in old_prompts} == first


def test_sigkill_mid_run_resumes_to_the_same_pool(tmp_path: Path):
    cfg = gen_config(k=2, train=6, batch_size=2)  # 12 candidates in 6 shards
    script = ("import sys, json; from heredity.plan import config_from_dict; from heredity.pipeline import run; "
              "run(config_from_dict(json.loads(sys.argv[1])), sys.argv[2], until='generate')")
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(cfg), str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = killed / "generate" / "shards"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(shards.glob("*.parquet"))) < 2:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(shards.glob("*.parquet")))
    assert 2 <= done_before < 6, "the kill should land mid-run"
    assert not (killed / "generate" / "candidates.parquet").exists()

    run(config_from_dict(cfg), killed, until="generate")
    manifest = json.loads((killed / "generate" / "manifest.json").read_text())
    assert manifest["counts"]["reused"] >= 2 * done_before
    assert manifest["counts"]["generated_now"] == 12 - manifest["counts"]["reused"]

    clean = tmp_path / "clean"
    run(config_from_dict(dict(cfg, teachers=[dict(cfg["teachers"][0], batch_size=12)])), clean, until="generate")
    resumed = pool(killed)
    assert len({r["candidate_key"] for r in resumed}) == 12  # no duplicates
    assert [(r["candidate_key"], r["text"]) for r in resumed] == [(r["candidate_key"], r["text"]) for r in pool(clean)]


def test_multi_source_pool_two_local_teachers_and_a_replay(tmp_path: Path, data_dir: Path):
    from heredity.config import PromptsConfig
    from heredity.core.prompts import load_prompts

    train, _ = load_prompts(PromptsConfig(limit_train=3))
    answers = json.loads((data_dir / "alpaca_eval" / "gpt-3.5-turbo-0613.json").read_text())
    replay = tmp_path / "earlier.jsonl"
    replay.write_text("".join(json.dumps({"instruction": p.text, "output": a["output"]}) + "\n"
                              for p, a in zip(train, answers)))
    teachers = [
        {"model": "embedded:smollm2-135m-instruct", "name": "hot", "sampling": {"temperature": 1.2, "max_new_tokens": 12}},
        {"model": "embedded:smollm2-135m-instruct", "name": "cool", "sampling": {"temperature": 0.5, "max_new_tokens": 12}},
        {"backend": "replay", "name": "earlier", "replay": {"path": str(replay)}},
    ]
    out = tmp_path / "run"
    run(config_from_dict(gen_config(k=2, teachers=teachers)), out, until="select")
    rows = pool(out)
    counts = {t: sum(r["teacher"] == t for r in rows) for t in ("hot", "cool", "earlier")}
    assert counts == {"hot": 6, "cool": 6, "earlier": 3}  # the file holds one answer per prompt
    assert {r["backend"] for r in rows} == {"transformers", "replay"}
    card = json.loads((out / "select" / "card.json").read_text())
    # gpt-3.5's full answers are far longer than 12 tokens: it wins every max-words contest
    assert card["teacher_share"]["active"]["earlier"] == 1.0


def test_teacher_progress_counts_reused_candidates_and_whole_prompts():
    from rich.console import Console
    from rich.progress import Progress

    from heredity.stages.generate import TeacherProgress

    wanted = [{"candidate_key": f"{p}-{i}", "prompt_id": p} for p in ("a", "b", "c") for i in range(2)]
    done = {"a-0": {}, "a-1": {}, "b-0": {}}  # prompt a finished by an earlier run, b half
    with Progress(console=Console(file=open(os.devnull, "w"))) as progress:
        display = TeacherProgress(progress, "t", wanted, done)
        task = progress.tasks[0]
        assert (task.completed, task.total) == (3, 6) and "prompts 1/3" in task.description
        display.advance([{"prompt_id": "b", "completion_tokens": 5}, {"prompt_id": "c", "completion_tokens": 7}],
                        failed=1)
        assert task.completed == 5 and "prompts 2/3" in task.description and "1 failed" in task.description
        assert display.tokens == 12
