"""rounds: each round's students are the next round's teachers. The configs a round derives, the
``from_teachers`` rule, a trained model's identity, preflight of models not yet trained, and a real
2-round run: round 2 samples round 1's students (regenerated here to prove it), trains from them on
the accumulated data, resumes after SIGKILL mid-round and reuses every finished round."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from rich.console import Console

from heredity.core.models import model_identity
from heredity.core.prompts import load_prompts
from heredity.core.rundir import Stage
from heredity.errors import HeredityError
from heredity.pipeline import round_plans, run
from heredity.plan import config_from_dict, preflight, produced_models, round_config, round_prompts
from heredity.stages.accumulate import run_accumulate
from heredity.stages.generate import run_generate
from heredity.strategies import select

from conftest import tiny_config


def rounds_config(**rounds) -> dict:
    cfg = tiny_config(**{"prompts.limit_train": 4, "prompts.limit_eval": 3})
    cfg["teachers"][0]["sampling"]["max_new_tokens"] = 16
    # full fine-tuning at a high rate: one step moves the model far enough that its samples differ
    cfg["train"] = {"method": "full", "epochs": 1, "batch_size": 4, "learning_rate": 5e-4, "max_length": 128}
    cfg["eval"]["max_new_tokens"] = 12
    cfg["rounds"] = {"count": 2, **rounds}
    return cfg


# ------------------------------------------------------------------------ config and planning


def test_rounds_shorthand_and_what_cannot_iterate():
    assert config_from_dict({**rounds_config(), "rounds": 3}).rounds.count == 3
    with pytest.raises(HeredityError, match="preference arms"):
        config_from_dict({**rounds_config(), "select": {"target": "length", "preference": {"dpo": {}}}})
    with pytest.raises(HeredityError, match=r"field 'rounds.stop_below.metric': 'ttr' is neither"):
        config_from_dict(rounds_config(stop_below={"metric": "ttr", "value": 1}))
    assert config_from_dict(rounds_config(stop_below={"metric": "self_bleu", "value": 90})).rounds.stop_below


def test_round_two_samples_each_arms_own_student_and_picks_only_among_its_chain(tmp_path):
    cfg = config_from_dict(rounds_config(keep_teachers=True))
    assert round_config(cfg, tmp_path, 1) is cfg
    second = round_config(cfg, tmp_path, 2)
    models = {t.label: t.model for t in second.teachers}
    assert models == {"passive": str(tmp_path.resolve() / "round-1/train/passive/model"),
                      "active": str(tmp_path.resolve() / "round-1/train/active/model"),
                      "smollm2-135m-instruct": "embedded:smollm2-135m-instruct"}
    assert all(t.sampling == cfg.teachers[0].sampling for t in second.teachers)
    specs = second.select.specs()
    assert specs["active"] == {"strategy": "from_teachers", "teachers": ["active", "smollm2-135m-instruct"],
                               "then": {"strategy": "best", "metric": "length", "direction": "max"}}
    assert specs["passive"]["then"] == {"strategy": "random", "seed": 0}
    own = round_config(config_from_dict(rounds_config()), tmp_path, 2)
    assert [t.label for t in own.teachers] == ["passive", "active"]
    assert own.select.specs()["active"]["teachers"] == ["active"]
    named = rounds_config(keep_teachers=True)
    named["teachers"][0]["name"] = "active"
    with pytest.raises(HeredityError, match="'rounds.keep_teachers': teacher name 'active'"):
        round_config(config_from_dict(named), tmp_path, 2)


def test_fresh_prompts_give_each_round_a_disjoint_part(tmp_path):
    cfg = config_from_dict({**rounds_config(prompts="fresh"), "prompts": {"source": "bundled:quickstart",
                                                                           "limit_train": 10, "limit_eval": 3}})
    cfg.rounds.count = 3
    train, _ = load_prompts(cfg.prompts)
    parts = [round_prompts(train, cfg, r) for r in (1, 2, 3)]
    ids = [p.id for part in parts for p in part]
    assert sorted(ids) == sorted(p.id for p in train) and len(set(ids)) == len(ids)
    assert [len(p) for p in parts] == [4, 3, 3]
    same = config_from_dict(rounds_config())
    assert round_prompts(train, same, 2) == train


def test_preflight_accepts_a_teacher_an_earlier_round_will_train(tmp_path):
    cfg = config_from_dict(rounds_config())
    second = round_plans(cfg, tmp_path)[(0, 2)]
    with pytest.raises(HeredityError, match=r"field 'teachers.0.model': model '.*round-1/train/passive/model' not found"):
        preflight(second, tmp_path / "round-2")
    preflight(second, tmp_path / "round-2", produced=produced_models(cfg, tmp_path))


def test_from_teachers_hands_on_only_the_named_teachers_candidates():
    pool = {"p1": [{"prompt_id": "p1", "teacher": t, "sample_index": i, "words": float(w)}
                   for t, i, w in (("a", 0, 5), ("b", 0, 9), ("a", 1, 7))],
            "p2": [{"prompt_id": "p2", "teacher": "b", "sample_index": 0, "words": 3.0}]}
    best = {"strategy": "best", "metric": "words", "direction": "max"}
    kept = select(pool, {"strategy": "from_teachers", "teachers": ["a"], "then": best})
    assert [(r["prompt_id"], r["teacher"], r["sample_index"]) for r in kept] == [("p1", "a", 1)]
    both = select(pool, {"strategy": "from_teachers", "teachers": ["a", "b"], "then": best})
    assert [(r["prompt_id"], r["teacher"]) for r in both] == [("p1", "b"), ("p2", "b")]
    with pytest.raises(HeredityError, match="no candidates from c; teachers: a, b"):
        select(pool, {"strategy": "from_teachers", "teachers": ["c"], "then": best})


def test_a_trained_model_is_identified_by_the_key_of_the_stage_that_made_it(tmp_path):
    stage = Stage(tmp_path, "train/active", {"data": "x"})
    stage.start()
    model = stage.dir / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    unfinished = model_identity(str(model))
    assert unfinished.startswith(str(model.resolve()))  # no manifest yet: the files' stamp
    stage.finish({"model": "model"})
    assert model_identity(str(model)) == f"stage:{stage.key}"
    os.utime(model / "model.safetensors", (0, 0))  # touching the files does not change what made them
    assert model_identity(str(model)) == f"stage:{stage.key}"
    assert model_identity(str(stage.dir)) != f"stage:{stage.key}"


# ------------------------------------------------------------------------ a real 2-round run


def manifests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): json.loads(p.read_text())["finished_at"] + json.loads(p.read_text())["key"]
            for p in sorted(out.rglob("manifest.json"))}


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory) -> tuple[Path, dict, dict]:
    """A 2-round run killed with SIGKILL once round 2's pool is generated, then resumed: (run
    directory, summary, manifests of the stages finished before the kill)."""
    folder = tmp_path_factory.mktemp("rounds")
    config, out = folder / "config.yaml", folder / "run"
    config.write_text(yaml.safe_dump(rounds_config(data="accumulate")))
    proc = subprocess.Popen([sys.executable, "-m", "heredity.cli", "run", str(config), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pool = out / "round-2" / "generate" / "manifest.json"
    deadline = time.time() + 600
    while not pool.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    output = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL, output[-3000:]
    assert not (out / "round-2" / "evaluate" / "active" / "manifest.json").exists()
    before = manifests(out)
    summary = run(config_from_dict(yaml.safe_load(config.read_text())), out, Console(file=io.StringIO()))
    return out, summary, before


@pytest.mark.slow
def test_resume_after_sigkill_mid_round_recomputes_nothing_finished(killed_and_resumed):
    out, summary, before = killed_and_resumed
    after = manifests(out)
    assert "round-2/generate/manifest.json" in before and "round-1/evaluate/active/manifest.json" in before
    assert {name: after[name] for name in before} == before  # round 1 and round 2's pool: reused, not redone
    assert summary["rounds"] == [1, 2] and set(summary["trajectories"]) == {"passive", "active"}
    assert (out / "report.html").is_file() and (out / "trajectories.png").is_file()
    # a finished run reruns in seconds and changes no stage
    rerun = run(config_from_dict(yaml.safe_load((out / "config.json").read_text())), out, Console(file=io.StringIO()))
    assert manifests(out) == after and rerun["trajectories"] == summary["trajectories"]


@pytest.mark.slow
def test_round_two_generates_with_round_ones_students(killed_and_resumed, tmp_path):
    out, _, _ = killed_and_resumed
    pool = pq.read_table(out / "round-2" / "generate" / "candidates.parquet").to_pylist()
    assert {r["teacher"] for r in pool} == {"passive", "active"}
    trained = json.loads((out / "round-1" / "train" / "active" / "manifest.json").read_text())["key"]
    cfg = config_from_dict(rounds_config(data="accumulate"))
    train, _ = load_prompts(cfg.prompts)

    def regenerate(model: str, where: Path) -> dict[tuple[str, int], str]:
        teacher = {**rounds_config()["teachers"][0], "model": model, "name": "active"}
        again = config_from_dict({**rounds_config(), "teachers": [teacher], "rounds": 1})
        stage = run_generate(again, where, train)
        return {(r["prompt_id"], r["sample_index"]): r["text"]
                for r in pq.read_table(stage.dir / "candidates.parquet").to_pylist()}

    round_two = {(r["prompt_id"], r["sample_index"]): r["text"] for r in pool if r["teacher"] == "active"}
    student = out / "round-1" / "train" / "active" / "model"
    assert model_identity(str(student)) == f"stage:{trained}"
    # the same model with the same candidate seeds writes the same texts; the initial model does not
    assert regenerate(str(student), tmp_path / "student") == round_two
    assert regenerate("embedded:smollm2-135m-instruct", tmp_path / "base") != round_two


@pytest.mark.slow
def test_round_two_trains_from_round_ones_student_on_both_rounds_data(killed_and_resumed, tmp_path):
    out, _, _ = killed_and_resumed
    for arm in ("passive", "active"):
        first = json.loads((out / "round-1" / "train" / arm / "manifest.json").read_text())
        second = json.loads((out / "round-2" / "train" / arm / "manifest.json").read_text())
        assert second["config"]["init"] == first["key"] and "init" not in first["config"]
        rows = pq.read_table(out / "round-2" / "accumulate" / f"{arm}.parquet").to_pylist()
        kept = [pq.read_table(out / f"round-{r}" / "select" / f"{arm}.parquet").num_rows for r in (1, 2)]
        assert [sum(1 for row in rows if row["round"] == r) for r in (1, 2)] == kept
        accumulated = json.loads((out / "round-2" / "accumulate" / "manifest.json").read_text())["data_hashes"][arm]
        assert second["config"]["data"] == accumulated
    # round 2 of each arm picks only among its own chain's candidates
    for arm in ("passive", "active"):
        assert {r["teacher"] for r in pq.read_table(out / "round-2" / "select" / f"{arm}.parquet").to_pylist()} == {arm}
    # the base student's answers are computed once, in round 1
    assert os.path.samefile(out / "round-1/evaluate/base/answers.parquet", out / "round-2/evaluate/base/answers.parquet")
    # accumulating the same selections again is reused by key
    selects = [Stage(out / f"round-{r}", "select", {}) for r in (1, 2)]
    assert run_accumulate(out / "round-2", selects, ("passive", "active")).reused


def test_export_of_a_rounds_run_names_the_round_to_export(tmp_path):
    from heredity.stages.export import export_run

    for number in (1, 2):
        (tmp_path / f"round-{number}").mkdir()
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(HeredityError, match=r"a rounds run; export one round's directory, e\.g\. .*round-2$"):
        export_run(tmp_path)
