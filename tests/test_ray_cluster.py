"""Score and profile on a real two-node Ray cluster, against a local run, and a node lost mid-stage.

The cluster is two ``ray start`` processes on this machine (a head and one worker node, one CPU
each, own temp dir and free ports); teardown kills exactly the processes they started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from heredity.config import RayConfig
from heredity.core.models import model_identity
from heredity.metrics import ray_scoring
from heredity.pipeline import run
from heredity.plan import config_from_dict
from heredity.core.prompts import Prompt
from heredity.stages.evaluate import run_evaluate, run_evaluations_on_ray
from heredity.core.rundir import Stage, write_table
from heredity.stages.judge import run_judge, run_judges_on_ray
from heredity.stages.profile import run_profile, run_profiles_on_ray

pytestmark = pytest.mark.slow  # tens of seconds: scheduled first (tests/conftest.py)

ray = pytest.importorskip("ray", reason="Ray is optional (pip install 'heredity[ray]')")

SRC = Path(__file__).resolve().parents[1] / "src"
MODEL = "embedded:smollm2-135m-instruct"
# The default toxicity metric, a quarter second slower per batch, so that a node can be
# stopped while it still has batches to score. The cluster's nodes import it from their path.
SLOW_TOXICITY = """
import time
from heredity.metrics import get_metric

def score(texts, context):
    time.sleep(0.25)
    return get_metric("toxicity").fn(texts, context)

score.loads_model = True
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    address: str
    head: subprocess.Popen
    worker: subprocess.Popen
    marker: str
    worker_node: str = ""

    def kill_worker_node(self) -> None:
        """The worker node dies at once: its raylet, its object store and its Ray workers."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        kill_marked(self.marker, only_worker_node=True)


def marked_pids(marker: str, only_worker_node: bool = False) -> list[int]:
    """Processes started by this test's cluster (their environment carries its marker)."""
    want = f"HEREDITY_TEST_CLUSTER={marker}{'/worker' if only_worker_node else ''}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(e == want or (not only_worker_node and e.startswith(want + b"/")) for e in env):
                pids.append(int(entry.name))
    return pids


def kill_marked(marker: str, only_worker_node: bool = False) -> None:
    for pid in marked_pids(marker, only_worker_node):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_node(args: list[str], temp: str, marker: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HEREDITY_TEST_CLUSTER": marker,
           "PYTHONPATH": os.pathsep.join([str(SRC), str(Path(temp) / "plugins"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           # a dead node is noticed in ~2 s, not the default ~30 s
           "RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
           "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "0"}
    ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
             f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
             f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}"]
    log = open(Path(temp) / f"{marker.rsplit('/', 1)[-1]}.log", "w")
    return subprocess.Popen(["ray", "start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                             "--disable-usage-stats", "--object-store-memory=200000000", *ports, *args],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(check, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.25)


def alive_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n["Alive"]]


@pytest.fixture(scope="module")
def cluster():
    temp = tempfile.mkdtemp(prefix="hrt", dir="/tmp")  # short: Ray's socket paths live under it
    (Path(temp) / "plugins").mkdir()
    (Path(temp) / "plugins" / "slow_toxicity.py").write_text(SLOW_TOXICITY)
    port = free_port()
    head = start_node(["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}"], temp, temp)
    worker = None
    try:
        wait_for(lambda: "Ray runtime started" in (Path(temp) / f"{Path(temp).name}.log").read_text()
                 or head.poll() is not None, "head node")
        assert head.poll() is None, (Path(temp) / f"{Path(temp).name}.log").read_text()[-2000:]
        worker = start_node([f"--address=127.0.0.1:{port}"], temp, f"{temp}/worker")
        box = Cluster(f"127.0.0.1:{port}", head, worker, temp)
        ray.init(address=box.address, log_to_driver=False, logging_level="ERROR")
        wait_for(lambda: len(alive_nodes()) == 2, "two nodes")
        box.worker_node = next(n["NodeID"] for n in alive_nodes()
                               if "node:__internal_head__" not in n["Resources"])
        yield box
    finally:
        ray.shutdown()
        for proc in (worker, head):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        kill_marked(temp)  # Ray workers run in sessions of their own
        shutil.rmtree(temp, ignore_errors=True)


def ray_config(cluster: Cluster, **extra) -> dict:
    # Half a CPU per replica: when the worker node dies, its replica restarts beside the head's.
    return {"address": cluster.address, "replicas": 2, "num_cpus_per_replica": 0.5, **extra}


def test_profile_and_evaluate_fan_out_one_model_per_task_with_local_values(cluster, tmp_path, monkeypatch):
    cfg = config_from_dict({"teachers": [{"model": MODEL}], "device": "cpu", "ray": ray_config(cluster),
                            "score": {"metrics": ["words"]}, "select": {"target": "words"},
                            "eval": {"profile": {"suites": ["calibration"], "limit": 4,
                                                 "batch_size": 8}, "bootstrap_samples": 100, "max_new_tokens": 8}})
    monkeypatch.setenv("HEREDITY_SCORE_CACHE", "0")
    prompts = [Prompt("p1", "Name a colour."), Prompt("p2", "What is 2 + 2?")]
    answered = run_evaluations_on_ray(cfg, tmp_path / "ray", prompts, {"base": None})
    local_answers = run_evaluate(cfg, tmp_path / "local", "base", prompts, None)
    assert (pq.read_table(answered["base"].dir / "answers.parquet").to_pylist()
            == pq.read_table(local_answers.dir / "answers.parquet").to_pylist())

    models = {"base": (MODEL, model_identity(MODEL)), "teacher-smollm": (MODEL, model_identity(MODEL))}
    stages = run_profiles_on_ray(cfg, tmp_path / "ray", models)
    # The nodes compute on one thread (OMP_NUM_THREADS=1); so must the local run, or float sums
    # over another thread count differ in the 7th digit (run serially, pytest -n 0, it had two).
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_profile(cfg, tmp_path / "local", "base", MODEL, model_identity(MODEL))
    finally:
        torch.set_num_threads(threads)
    want = json.loads((local.dir / "summary.json").read_text())
    for name, stage in stages.items():
        manifest = json.loads((stage.dir / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["key"] == local.key or name != "base"
        got = json.loads((stage.dir / "summary.json").read_text())
        assert got["suites"].keys() == {"calibration"}
        for suite in got["suites"]:
            assert got["suites"][suite]["metrics"] == want["suites"][suite]["metrics"], (name, suite)
            assert (pq.read_table(stage.dir / f"{suite}.parquet")
                    .equals(pq.read_table(local.dir / f"{suite}.parquet"))), (name, suite)
    # both models ran at once, one per node
    assert {json.loads((s.dir / "summary.json").read_text())["device"] for s in stages.values()} == {"cpu"}
    # a second call finds both stages done and starts nothing
    again = run_profiles_on_ray(cfg, tmp_path / "ray", models)
    assert all(s.reused for s in again.values())


def replay_config(data_dir: Path, **extra) -> dict:
    alpaca = data_dir / "alpaca_eval"
    return {
        "prompts": {"source": str(alpaca / "gpt-3.5-turbo-0613.json"), "field": "instruction", "id_field": None,
                    "eval_every": None, "limit_train": 30},
        "teachers": [{"backend": "replay", "replay": {"path": str(alpaca / name)}}
                     for name in ("gpt-3.5-turbo-0613.json", "llama-2-7b-chat-hf.json")],
        "k": 1, "device": "cpu",
        "score": {"metrics": ["words", "mtld", {"name": "slow_toxicity:score", "as": "toxicity"}]},
        "select": {"target": "words"}, **extra,
    }


def cache_rows(path: Path) -> dict[tuple[str, bytes], float | None]:
    with sqlite3.connect(path) as conn:
        return {(ns, bytes(key)): value for ns, key, value in conn.execute(
            "SELECT n.ns, s.key, s.value FROM scores s JOIN namespaces n ON n.id = s.ns")}


def test_score_on_the_cluster_survives_a_lost_node_and_equals_local(cluster, data_dir, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(cluster.marker) / "plugins"))
    monkeypatch.setenv("HEREDITY_SCORE_CACHE", str(tmp_path / "local.sqlite"))
    run(config_from_dict(replay_config(data_dir)), tmp_path / "local", until="score")

    seen: list[tuple[str, int, str]] = []

    def kill_once_the_worker_node_has_scored(column: str, done: int, total: int, node: str) -> None:
        seen.append((column, done, node))
        if column == "toxicity" and node == cluster.worker_node and done < total and cluster.worker.poll() is None:
            cluster.kill_worker_node()
            seen.append(("killed", done, node))

    monkeypatch.setattr(ray_scoring, "BATCH_OBSERVERS", [kill_once_the_worker_node_has_scored])
    monkeypatch.setenv("HEREDITY_SCORE_CACHE", str(tmp_path / "ray.sqlite"))
    cfg = replay_config(data_dir, ray=ray_config(cluster, batch_size=3))
    run(config_from_dict(cfg), tmp_path / "ray", until="score")

    killed = [done for what, done, _ in seen if what == "killed"]
    assert killed and killed[0] < 60, seen  # the node died with toxicity batches still to score
    wait_for(lambda: cluster.worker_node not in {n["NodeID"] for n in alive_nodes()}, "the node marked dead", 30)
    after = [node for what, done, node in seen[seen.index(("killed", killed[0], cluster.worker_node)) + 1:]]
    # The rest was scored on the head; unless, on a loaded machine, the node's results already in
    # flight when it died were all that was left (then the head had nothing to take over).
    left = 60 - killed[0]
    assert after and (set(after) != {cluster.worker_node} or left <= 3 * len(after)), seen

    local = pq.read_table(tmp_path / "local" / "score" / "scores.parquet").to_pylist()
    scored = pq.read_table(tmp_path / "ray" / "score" / "scores.parquet").to_pylist()
    assert len(scored) == 60 and len({r["candidate_key"] for r in scored}) == 60  # each candidate once
    assert [r["candidate_key"] for r in scored] == [r["candidate_key"] for r in local]
    for a, b in zip(scored, local):
        assert a["words"] == b["words"] and a["mtld"] == b["mtld"]
        # the embedding model computes in float32 and its sums depend on which texts share a
        # batch (padding): the same text scored in another batch differs at float32 rounding
        assert a["toxicity"] == pytest.approx(b["toxicity"], rel=1e-5, abs=1e-7)
    # the same score cache, written by the driver alone: one value per (metric, text)
    ours, theirs = cache_rows(tmp_path / "ray.sqlite"), cache_rows(tmp_path / "local.sqlite")
    assert ours.keys() == theirs.keys() and len(ours) == 3 * len({r["text"] for r in local})
    manifest = json.loads((tmp_path / "ray" / "score" / "manifest.json").read_text())
    assert manifest["counts"]["cache"] == {"hits": 0, "computed": 180}
    assert manifest["counts"]["notes"]["ray"]["toxicity"]["nodes"] == 2


def test_judge_fans_out_one_comparison_per_task_with_local_verdicts(cluster, data_dir, tmp_path, monkeypatch):
    """Two comparisons judged at once on the cluster give the local verdicts, written by the driver."""
    cfg = config_from_dict({"teachers": [{"model": MODEL}], "device": "cpu", "ray": ray_config(cluster),
                            "score": {"metrics": ["words"]}, "select": {"target": "words"},
                            "eval": {"judge": {"model": {"model": MODEL, "batch_size": 8}, "max_answer_chars": 400},
                                     "bootstrap_samples": 100}})
    answers = {name: json.loads((data_dir / "alpaca_eval" / f"{name}.json").read_text())[:3]
               for name in ("alpaca-7b", "gemma-7b-it", "vicuna-7b-v1.5")}
    eval_stages = {}
    for name, rows in answers.items():  # three arms' held-out answers: real AlpacaEval outputs
        stage = Stage(tmp_path / "ray", f"evaluate/{name}", {"answers": name})
        stage.start()
        write_table(stage.dir / "answers.parquet", [{"prompt_id": f"p{i}", "prompt": r["instruction"],
                                                     "text": r["output"]} for i, r in enumerate(rows)])
        stage.finish({"answers": "answers.parquet"})
        eval_stages[name] = stage
    comparisons = [("gemma-7b-it", "alpaca-7b"), ("vicuna-7b-v1.5", "alpaca-7b")]
    judged = run_judges_on_ray(cfg, tmp_path / "ray", eval_stages, comparisons)
    assert set(judged) == {"gemma-7b-it_vs_alpaca-7b", "vicuna-7b-v1.5_vs_alpaca-7b"}
    for a, b in comparisons:
        local = run_judge(cfg, tmp_path / "ray-local", eval_stages, a, b)
        stage = judged[f"{a}_vs_{b}"]
        assert stage.key == local.key
        assert json.loads((stage.dir / "manifest.json").read_text())["status"] == "complete"
        got, want = (pq.read_table(s.dir / "judgments.parquet").to_pylist() for s in (stage, local))
        assert len(got) == 3
        assert [(r["pair_id"], r["choice_ab"], r["choice_ba"]) for r in got] == \
            [(r["pair_id"], r["choice_ab"], r["choice_ba"]) for r in want]
        assert [r["pref_a"] for r in got] == pytest.approx([r["pref_a"] for r in want], abs=1e-5)
    assert all(s.reused for s in run_judges_on_ray(cfg, tmp_path / "ray", eval_stages, comparisons).values())


def test_training_seeds_run_their_evaluations_on_the_cluster(cluster, tmp_path, monkeypatch):
    """train.seeds with ray: every replicate fans its evaluations out (the local path would fail),
    and the seeds pool into one summary as they do locally (tests/test_seeds.py)."""
    import io

    from rich.console import Console

    import heredity.pipeline

    def local(*args, **kwargs):
        raise AssertionError("an evaluation ran in-process instead of on the cluster")

    monkeypatch.setattr(heredity.pipeline, "run_evaluate", local)
    monkeypatch.setenv("HEREDITY_SCORE_CACHE", "0")
    cfg = {"prompts": {"source": "bundled:quickstart", "limit_train": 4, "limit_eval": 2},
           "teachers": [{"model": MODEL, "sampling": {"temperature": 1.0, "max_new_tokens": 16, "seed": 0}}],
           "k": 2, "score": {"metrics": ["length", "mtld"]}, "select": {"target": "length"},
           "train": {"epochs": 1, "batch_size": 6, "learning_rate": 1e-4, "max_length": 128, "seeds": [0, 1]},
           "eval": {"max_new_tokens": 8, "bootstrap_samples": 200}, "device": "cpu", "ray": ray_config(cluster)}
    summary = run(config_from_dict(cfg), tmp_path / "run", Console(file=io.StringIO()))
    assert summary["seeds"]["values"] == [0, 1]
    for where in (tmp_path / "run", tmp_path / "run" / "seeds" / "seed-1"):
        for arm in ("base", "passive", "active"):
            assert (where / "evaluate" / arm / "answers.parquet").is_file(), (where, arm)
    d = summary["differences"]["active_vs_passive"]["length"]
    assert d["seeds"] == 2 and len(d["per_seed"]) == 2
