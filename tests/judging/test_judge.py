"""LLM as judge: verdict parsing, both-order scoring, the length-controlled win rate and the
judge-preference profile on stub judges whose verdicts are given; then the embedded model as a
judge on real AlpacaEval pairs."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest

from heredity.backends import Completion
from heredity.config import JudgeConfig
from heredity.core.stats import fit_length_glm, length_feature
from heredity.errors import HeredityError
from heredity.judging import (
    GenerationJudge,
    Pair,
    Verdict,
    alpaca_eval_pairs,
    compare_profiles,
    judge_config,
    judge_pairs,
    load_answers,
    open_judge,
    pair_answers,
    pairwise,
    parse_verdict,
    preference_profile,
)

MODEL = "embedded:smollm2-135m-instruct"
FAST = JudgeConfig(bootstrap_samples=200)


class StubJudge:
    """Verdicts from a rule ``decide(query) -> Verdict``; records what it was asked."""

    method = "stub"

    def __init__(self, decide, label: str = "stub"):
        self.decide = decide
        self.label = label
        self.asked = []

    def judge(self, queries):
        self.asked.extend(queries)
        return [self.decide(q) for q in queries]

    def close(self):
        pass


class FixedBackend:
    """A generation backend that answers every request with the same text."""

    def __init__(self, text: str):
        self.text = text
        self.calls = 0

    def generate(self, requests, sampling):
        assert sampling.temperature == 0.0  # judges decode greedily
        self.calls += 1
        return [Completion(self.text, "stop", 10, 2) for _ in requests]

    def close(self):
        pass


def prefers(better: set[str]):
    """A position-free judge: names whichever shown answer is in ``better`` (the first if neither)."""
    return lambda q: Verdict(q.second, "b" if q.second in better and q.first not in better else "a")


def make_pairs(n: int, model_a: str = "A", model_b: str = "B") -> list[Pair]:
    return [Pair(str(i), f"instruction {i}", f"answer A{i}", f"answer B{i}", model_a, model_b) for i in range(n)]


# --- verdict parsing -----------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("(a)", "a"), ("(b)", "b"), ("(A)", "a"), ("b", "b"), ("B.", "b"), ("**(b)**", "b"), ("  (a)\n", "a"),
    ("Output: (a)", "a"), ("Answer: b", "b"), ("a) is more helpful", "a"), ("Answer (b) is better.", "b"),
    ("I prefer answer (b) because it is correct", "b"), ("Answer a is better than the other", "a"),
    ("(a) or (b)", None), ("Both (a) and (b) are fine", None), ("A good answer would", None),
    ("The answer (", None), ("", None), ("I cannot decide.", None), ("c", None),
])
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected


# --- both orders, win rate, consistency ----------------------------------------------------

def test_known_win_rate_and_both_orders():
    # Answers A0..A2 are better than B's, B3 beats A3: a position-free judge gives A 3 of 4.
    better = {"answer A0", "answer A1", "answer A2", "answer B3"}
    judge = StubJudge(prefers(better))
    pairs = make_pairs(4)
    result = pairwise(judge, pairs, FAST)
    s = result.summary
    assert s["win_rate"]["value"] == pytest.approx(75.0)
    assert (s["wins"], s["ties"], s["losses"]) == (3, 0, 1)
    assert s["position_consistency"]["value"] == 100.0
    # every pair names the first-shown answer in exactly one of its two orders; resampled by pair
    # (not by verdict) the rate cannot move
    assert s["first_position_rate"] == {"value": 50.0, "ci95": [50.0, 50.0], "n": 8}
    assert s["unparseable"]["count"] == 0
    lo, hi = s["win_rate"]["ci95"]
    assert 0 <= lo <= 75 <= hi <= 100
    # both orders, A first then B first, for every pair
    assert len(judge.asked) == 8
    assert [(q.first, q.second) for q in judge.asked[:2]] == [("answer A0", "answer B0"), ("answer B0", "answer A0")]
    assert [r["pair_id"] for r in result.rows] == ["0", "1", "2", "3"]
    assert [r["pref_a"] for r in result.rows] == [1.0, 1.0, 1.0, 0.0]


def test_always_first_judge_cancels_to_half_through_a_backend():
    # A judge that always says "(a)": every prompt gets 1 (A first) and 0 (B first) -> exactly 0.5.
    backend = FixedBackend("(a)")
    cfg = JudgeConfig(bootstrap_samples=200, model={"model": "stub", "batch_size": 3})
    judge = GenerationJudge(backend, cfg)
    s = pairwise(judge, make_pairs(5), cfg).summary
    assert s["win_rate"]["value"] == 50.0
    assert s["win_rate"]["ci95"] == [50.0, 50.0]
    assert s["position_consistency"]["value"] == 0.0
    assert s["first_position_rate"] == {"value": 100.0, "ci95": [100.0, 100.0], "n": 10}
    assert s["ties"] == 5
    assert backend.calls == 4  # 10 verdicts in batches of 3


def test_unparseable_tie_or_drop():
    # Pair 0: A first -> "(a)" (A), B first -> gibberish. Pair 1: gibberish both ways. Pair 2: B both ways.
    texts = {("A0", "B0"): "(a)", ("B0", "A0"): "no idea", ("A1", "B1"): "hmm", ("B1", "A1"): "?",
             ("A2", "B2"): "(b)", ("B2", "A2"): "(a)"}
    judge = StubJudge(lambda q: Verdict(t := texts[(q.first, q.second)], parse_verdict(t)))
    pairs = [Pair(str(i), "x", f"A{i}", f"B{i}", "A", "B") for i in range(3)]
    tie = pairwise(judge, pairs, FAST)
    assert [r["pref_a"] for r in tie.rows] == [0.75, 0.5, 0.0]
    assert tie.summary["win_rate"]["value"] == pytest.approx(100 * 1.25 / 3)
    assert tie.summary["unparseable"] == {"count": 3, "rate": 0.5, "policy": "tie"}
    assert tie.summary["position_consistency"]["n"] == 1  # only pair 2 has both verdicts
    drop = pairwise(judge, pairs, JudgeConfig(bootstrap_samples=200, unparseable="drop"))
    assert [r["pref_a"] for r in drop.rows] == [1.0, None, 0.0]
    assert drop.summary["pairs_used"] == 2
    assert drop.summary["win_rate"]["value"] == 50.0


def test_soft_verdicts_combine_both_orders():
    # p(first) = 0.8 whatever is shown: pure position bias -> 0.5; plus a real 0.1 edge for A.
    judge = StubJudge(lambda q: Verdict("", "a", 0.9 if q.first.startswith("answer A") else 0.7))
    rows = judge_pairs(judge, make_pairs(2), FAST)
    assert rows[0]["pref_a"] == pytest.approx((0.9 + 0.3) / 2)
    assert rows[0]["consistent"] is False  # both orders name the first answer


# --- length control ------------------------------------------------------------------------

def length_pairs(n: int, seed: int, a_shift: float) -> list[Pair]:
    rng = np.random.default_rng(seed)
    len_a = np.maximum(5, rng.normal(400 + a_shift, 150, n)).astype(int)
    len_b = np.maximum(5, rng.normal(400, 150, n)).astype(int)
    return [Pair(str(i), f"q{i}", "a" * la, "b" * lb, "A", "B") for i, (la, lb) in enumerate(zip(len_a, len_b))]


def coin(key: str) -> float:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 16**8


def length_judge(pairs: list[Pair], edge: float = 0.0, strength: float = 3.0) -> StubJudge:
    """Prefers A with probability σ(edge + strength·tanh(Δlen/sd)); the same draw in both orders."""
    x = dict(zip((p.instruction for p in pairs),
                 length_feature([len(p.answer_a) for p in pairs], [len(p.answer_b) for p in pairs])))
    lookup = {p.instruction: p for p in pairs}

    def decide(q):
        p = lookup[q.instruction]
        a_first = q.first == p.answer_a
        a_wins = coin(p.pair_id) < 1 / (1 + np.exp(-(edge + strength * x[p.instruction])))
        return Verdict("", "a" if a_wins == a_first else "b")

    return StubJudge(decide)


def test_length_controlled_win_rate_removes_a_pure_length_preference():
    # A's answers are longer on average and the judge cares only about length.
    pairs = length_pairs(1000, seed=0, a_shift=250)
    s = pairwise(length_judge(pairs), pairs, JudgeConfig(bootstrap_samples=100)).summary
    assert s["win_rate"]["value"] > 80
    lc = s["length_controlled"]["win_rate"]
    assert 45 < lc["value"] < 55
    assert lc["ci95"][0] < 50 < lc["ci95"][1]
    assert s["length_controlled"]["length_coef"] == pytest.approx(3.0, abs=0.6)
    assert s["longer_preferred"]["value"] > 80


def test_length_controlled_win_rate_keeps_a_real_edge():
    # No length difference on average, a real edge of σ(1) = 73% for A: LC stays near the raw rate.
    pairs = length_pairs(1000, seed=1, a_shift=0)
    s = pairwise(length_judge(pairs, edge=1.0, strength=0.0), pairs, JudgeConfig(bootstrap_samples=100)).summary
    assert s["win_rate"]["value"] == pytest.approx(73, abs=4)
    assert s["length_controlled"]["win_rate"]["value"] == pytest.approx(s["win_rate"]["value"], abs=2)


def test_length_glm_is_finite_under_perfect_separation():
    x = np.array([-0.9, -0.5, 0.4, 0.8])
    theta, phi = fit_length_glm(np.array([0.0, 0.0, 1.0, 1.0]), np.zeros(4, int), np.ones(4, int), 2, x, l2=0.1)
    assert np.all(np.isfinite(theta)) and np.isfinite(phi) and phi > 3
    assert theta[0] == pytest.approx(-theta[1])


# --- judge-preference profile --------------------------------------------------------------

def three_model_pairs(n: int) -> list[Pair]:
    models = ["m1", "m2", "m3"]
    pairs = []
    for i in range(n):
        x, y = models[i % 3], models[(i + 1) % 3]
        pairs.append(Pair(f"{i}", f"q{i}", f"{x} says {'x' * (i % 7)}", f"{y} says {'y' * (i % 5)}", x, y))
    return pairs


def test_preference_profile_and_paired_comparison():
    pairs = three_model_pairs(30)
    neutral = preference_profile(StubJudge(lambda q: Verdict("(a)", "a")), pairs, FAST)
    # the second judge ranks m1 > m2 > m3 whatever the order ("m1 says" sorts before "m2 says")
    fan = preference_profile(StubJudge(lambda q: Verdict("", "a" if q.first < q.second else "b")), pairs, FAST)
    assert set(neutral.summary["models"]) == {"m1", "m2", "m3"}
    assert all(m["win_rate"]["value"] == 50.0 for m in neutral.summary["models"].values())
    m = fan.summary["models"]
    assert m["m1"]["win_rate"]["value"] == 100.0 and m["m1"]["pairs"] == 20
    assert m["m2"]["win_rate"]["value"] == 50.0  # beats m3 always, loses to m1 always
    assert m["m3"]["win_rate"]["value"] == 0.0
    assert fan.summary["ranking"] == ["m1", "m2", "m3"]
    assert m["m1"]["lc_win_rate"]["value"] > 90
    cmp = compare_profiles(neutral, fan, samples=200)
    assert cmp["pairs"] == 30
    assert cmp["models"]["m1"]["diff"] == 50.0 and cmp["models"]["m1"]["ci95"] == [50.0, 50.0]
    assert cmp["models"]["m3"]["diff"] == -50.0
    assert cmp["models"]["m2"]["diff"] == 0.0


def test_profile_writes_parquet_and_json(tmp_path):
    import pyarrow.parquet as pq

    pairs = three_model_pairs(6)
    result = preference_profile(StubJudge(lambda q: Verdict("(b)", "b")), pairs, FAST, out=tmp_path / "p")
    table = pq.read_table(tmp_path / "p" / "judgments.parquet").to_pylist()
    assert [r["pair_id"] for r in table] == [p.pair_id for p in pairs]
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["kind"] == "preference_profile" and summary["pairs"] == 6
    assert summary["first_position_rate"]["value"] == 0.0
    assert result.summary["position_consistency"]["value"] == 0.0


# --- pairs from data -----------------------------------------------------------------------

def test_alpaca_eval_pairs(data_dir):
    files = sorted((data_dir / "alpaca_eval").glob("*.json"))
    n_rows = len(json.loads(files[0].read_text(encoding="utf-8")))  # 50 instructions in the excerpt
    assert len(files) == 12 and n_rows < 66
    # Asking for more pairs than there are instructions gives one pair per instruction, no repeats.
    pairs = alpaca_eval_pairs(data_dir, n=66, seed=3)
    assert pairs == alpaca_eval_pairs(data_dir, n=66, seed=3)
    assert len(pairs) == len({p.instruction for p in pairs}) == n_rows
    assert all(p.model_a != p.model_b for p in pairs)
    # Fewer instructions than the 66 model pairs of 12 models: no model pair is used twice.
    assert len({frozenset((p.model_a, p.model_b)) for p in pairs}) == n_rows
    # As many instructions as model pairs = each model pair once, every model in (models - 1) pairs.
    # 12 models need 66 instructions, more than the excerpt has; the largest set whose pairs fit it
    # (10 models, 45 pairs, for 50 instructions) checks the same balance.
    size = max(m for m in range(2, len(files) + 1) if m * (m - 1) // 2 <= n_rows)
    models = [f.stem for f in files[:size]]
    n_combos = size * (size - 1) // 2
    pairs = alpaca_eval_pairs(data_dir, n=n_combos, models=models, seed=3)
    assert len({p.instruction for p in pairs}) == n_combos
    assert len({frozenset((p.model_a, p.model_b)) for p in pairs}) == n_combos
    counts = {}
    for p in pairs:
        for m in (p.model_a, p.model_b):
            counts[m] = counts.get(m, 0) + 1
    assert set(counts) == set(models) and set(counts.values()) == {size - 1}
    rows = {m: json.loads((data_dir / "alpaca_eval" / f"{m}.json").read_text()) for m in ("alpaca-7b",)}
    two = alpaca_eval_pairs(data_dir, n=5, models=["gpt-3.5-turbo-0613", "alpaca-7b"])
    for p in two:
        item = int(p.pair_id.split(":")[0])
        side = p.answer_a if p.model_a == "alpaca-7b" else p.answer_b
        assert side == rows["alpaca-7b"][item]["output"]
        assert p.instruction == rows["alpaca-7b"][item]["instruction"]
    with pytest.raises(HeredityError, match="no answers for nope"):
        alpaca_eval_pairs(data_dir, n=5, models=["alpaca-7b", "nope"])


def test_load_and_pair_answers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"prompt": f"p{i}", "answer": f"a{i}"}) for i in range(3)))
    (tmp_path / "b.json").write_text(json.dumps([{"instruction": f"p{i}", "output": f"b{i}", "generator": "gen-b"}
                                                 for i in (2, 1, 9)]))
    arm = tmp_path / "run" / "evaluate" / "active"
    arm.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"prompt_id": "x", "prompt": "p1", "text": "c1"}]), arm / "answers.parquet")
    a, label_a = load_answers(tmp_path / "a.jsonl")
    b, label_b = load_answers(str(tmp_path / "b.json"))
    c, label_c = load_answers(f"{tmp_path / 'run'}:active")
    assert (label_a, label_b, label_c) == ("a", "gen-b", "active")
    pairs = pair_answers(a, b, label_a, label_b)
    assert [(p.instruction, p.answer_a, p.answer_b) for p in pairs] == [("p1", "a1", "b1"), ("p2", "a2", "b2")]
    assert pair_answers(a, c, "a", "active")[0].answer_b == "c1"
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p0", "answer": "x"}\n{"prompt": "p0", "answer": "y"}\n')
    with pytest.raises(HeredityError, match=r"bad.jsonl, row 2, field 'prompt': the same prompt as row 1"):
        load_answers(tmp_path / "bad.jsonl")
    (tmp_path / "cols.jsonl").write_text('{"question": "p0", "answer": "x"}\n')
    with pytest.raises(HeredityError, match=r"cols.jsonl, row 1: no prompt"):
        load_answers(tmp_path / "cols.jsonl")
    with pytest.raises(HeredityError, match="no prompt in common"):
        pair_answers(a, [("zz", "q")], "a", "b")


def test_judge_config_errors():
    with pytest.raises(HeredityError, match="backend 'replay' cannot judge"):
        open_judge({"model": {"backend": "replay", "replay": {"path": "x.json"}}})
    with pytest.raises(HeredityError, match="method 'logprob' needs backend 'transformers'"):
        open_judge({"model": {"backend": "openai", "openai": {"base_url": "http://127.0.0.1:1/v1"}},
                    "method": "logprob"})
    with pytest.raises(HeredityError, match="field 'template'"):
        judge_config({"template": "no placeholders"})
    assert judge_config(MODEL).resolved_method() == "logprob"


def test_cli_judge_reports_bad_input_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from heredity.cli import app

    result = CliRunner().invoke(app, ["judge", str(tmp_path / "missing.json"), str(tmp_path / "b.json"),
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "missing.json: answers file not found" in result.output
    assert "Traceback" not in result.output


# --- the embedded model as judge -----------------------------------------------------------

@pytest.fixture(scope="module", autouse=False)
def one_thread():
    """One torch thread: on a shared 2-core box, two threads slow down badly when other jobs run."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def real_pairs(data_dir):
    return alpaca_eval_pairs(data_dir, n=6, models=["gpt-3.5-turbo-0613", "alpaca-7b"], seed=0)


@pytest.fixture(scope="module")
def logprob_judge(one_thread):
    judge = open_judge({"model": {"model": MODEL}, "max_answer_chars": 300, "device": "cpu",
                        "bootstrap_samples": 200})
    yield judge
    judge.close()


def test_embedded_judge_logprob_on_alpaca_eval(real_pairs, logprob_judge, tmp_path):
    import pyarrow.parquet as pq

    assert logprob_judge.method == "logprob"
    pairwise(logprob_judge, real_pairs, out=tmp_path / "j")
    rows = pq.read_table(tmp_path / "j" / "judgments.parquet").to_pylist()
    assert [r["pair_id"] for r in rows] == [p.pair_id for p in real_pairs]
    assert [(r["answer_a"], r["answer_b"]) for r in rows] == [(p.answer_a, p.answer_b) for p in real_pairs]
    for r in rows:  # both orders judged, soft verdicts in (0, 1), combined as the mean
        assert 0 < r["p_first_ab"] < 1 and 0 < r["p_first_ba"] < 1
        assert r["pref_a"] == pytest.approx((r["p_first_ab"] + 1 - r["p_first_ba"]) / 2)
        assert r["raw_ab"].startswith("logp(a)=") and r["raw_ab"] != r["raw_ba"]
    s = json.loads((tmp_path / "j" / "summary.json").read_text())
    assert s["pairs"] == 6 and s["unparseable"]["count"] == 0
    assert {s["model_a"], s["model_b"]} == {real_pairs[0].model_a, real_pairs[0].model_b}
    assert 0 <= s["win_rate"]["value"] <= 100 and s["protocol"]["method"] == "logprob"
    again = pairwise(logprob_judge, real_pairs[:2])  # reproducible: the same verdicts again, in another batch
    assert [r["pref_a"] for r in again.rows] == pytest.approx([r["pref_a"] for r in rows[:2]], abs=1e-5)


def test_embedded_judge_generates_through_the_transformers_backend(real_pairs, one_thread):
    cfg = judge_config({"model": {"model": MODEL, "backend": "transformers", "batch_size": 4},
                        "method": "generate", "max_answer_chars": 200, "max_new_tokens": 4, "device": "cpu",
                        "bootstrap_samples": 200})
    result = pairwise(cfg, real_pairs[:3])
    assert len(result.rows) == 3 and result.summary["verdicts"] == 6
    for r in result.rows:
        assert r["raw_ab"] and r["raw_ba"]  # decoded text, parsed or counted as unparseable
        assert r["choice_ab"] == parse_verdict(r["raw_ab"]) and r["p_first_ab"] is None
    s = result.summary
    assert s["unparseable"]["count"] == sum((r["choice_ab"] is None) + (r["choice_ba"] is None) for r in result.rows)
    assert s["protocol"]["method"] == "generate" and s["protocol"]["backend"] == "transformers"


# --- a judge behind an OpenAI-compatible endpoint ------------------------------------------

def test_openai_backend_judge_prefers_longer(tmp_path, monkeypatch):
    """A stub server that always names the longer answer, in words: parsed, both orders, no key written."""
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    import re
    import socket
    import threading

    from fastapi import FastAPI

    app = FastAPI()
    seen = []

    @app.post("/v1/chat/completions")
    async def chat(body: dict):
        seen.append(body)
        text = body["messages"][-1]["content"]
        first, second = re.search(r"### Answer \(a\)\n(.*)\n\n### Answer \(b\)\n(.*)\n\nWhich", text, re.S).groups()
        verdict = "Answer (a) is better." if len(first) > len(second) else "**(b)**"
        return {"choices": [{"message": {"content": verdict}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 3}}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        monkeypatch.setenv("JUDGE_TEST_KEY", "sk-secret-judge-key")
        cfg = judge_config({"model": {"model": "stub-judge", "backend": "openai",
                                      "openai": {"base_url": f"http://127.0.0.1:{port}/v1",
                                                 "api_key_env": "JUDGE_TEST_KEY"}},
                            "bootstrap_samples": 200})
        pairs = [Pair(str(i), f"q{i}", "x" * (10 + i), "y" * (12 - i), "A", "B") for i in range(4)]
        result = pairwise(cfg, pairs, out=tmp_path / "o")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert len(seen) == 8 and all(b["temperature"] == 0 for b in seen)
    assert result.summary["protocol"]["method"] == "generate"
    assert result.summary["unparseable"]["count"] == 0
    # A is longer in pairs 2 and 3 (12, 13 vs 10, 9 characters); pair 1 is a tie in length: 11 vs 11,
    # where the stub names (b) in both orders -> one verdict each way -> 0.5
    assert [r["pref_a"] for r in result.rows] == [0.0, 0.5, 1.0, 1.0]
    assert result.summary["position_consistency"]["value"] == pytest.approx(100 * 3 / 4)
    written = (tmp_path / "o" / "summary.json").read_text() + (tmp_path / "o" / "judgments.parquet").read_bytes().decode("latin-1")
    assert "sk-secret-judge-key" not in written


def test_judge_stage_key_keeps_older_keys_and_holds_no_credentials():
    from heredity.stages.judge import judge_key

    def key(**openai):
        return judge_key(judge_config({"model": {"model": "m", "backend": "openai", "openai": {
            "base_url": "https://user:sk-in-url@api.example/v1?key=sk-q", **openai}}}))["judge"]["openai"]

    # the openai options a judge key held before check_model and extra_body existed: such a key
    # (and the judge stage behind it) stays the same
    before = {"base_url", "api_key_env", "served_model", "concurrency", "max_retries", "timeout_s",
              "backoff_initial_s", "backoff_max_s", "retry_after_max_s"}
    assert set(key()) == before and key() == key(check_model=False)
    assert key(extra_body={"top_k": 0})["extra_body"] == {"top_k": 0}  # it changes verdicts: keyed
    assert "sk-" not in key()["base_url"] and "api.example" in key()["base_url"]
