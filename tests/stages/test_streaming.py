"""The score and select stages stream their Parquet files in batches; what they write must equal
what the same libraries give on the whole pool held in memory (real AlpacaEval answers)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from heredity.core import rundir
from heredity.core.models import load_tokenizer
from heredity.core.rundir import ListHash, stable_hash
from heredity.metrics import MetricContext
from heredity.pipeline import run
from heredity.plan import config_from_dict
from heredity.metrics.scoring import score_texts
from heredity.strategies import (
    data_card,
    dose_response,
    export_selection,
    group_by_prompt,
    parse_spec,
    register_strategy,
    select,
    sweep,
)

MODELS = ["alpaca-7b", "zephyr-7b-beta", "gemma-7b-it", "Mixtral-8x7B-Instruct-v0.1_concise"]
METRICS = ["length", "mtld", "words"]
STUDENT = "embedded:smollm2-135m-instruct"
# Prompts taken for training: fewer than the 50 instructions of the excerpt, so the limit is applied;
# 4 teachers x 40 = 160 candidates, several 37-row batches.
LIMIT_TRAIN = 40


@register_strategy("test-most-question-marks")
def most_question_marks(groups, params, ctx):
    """A plugin-style rule that reads the answer text itself (so the stage must hand it whole rows)."""
    return [ctx.pick(rows, lambda r: r["text"].count("?")) for _, rows in sorted(groups.items())]


def config(data_dir: Path, **select_extra) -> dict:
    folder = data_dir / "alpaca_eval"
    return {
        "prompts": {"source": str(folder / "gpt-3.5-turbo-0613.json"), "field": "instruction", "id_field": None,
                    "eval_every": None, "limit_train": LIMIT_TRAIN},
        # replayed teachers are written teacher by teacher: a prompt's four candidates lie far apart
        "teachers": [{"backend": "replay", "replay": {"path": str(folder / f"{m}.json")}} for m in MODELS],
        "k": 1,
        "student": STUDENT,
        "score": {"metrics": METRICS},
        "select": {"target": "length", "direction": "max", "sweep": "candidate", **select_extra},
    }


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def assert_rows_equal(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert list(g) == list(w)
        assert all(same(g[k], w[k]) for k in g), (g["prompt_id"], g["teacher"])


@pytest.fixture
def small_batches(monkeypatch):
    # 37 rows a batch: every prompt's candidates span several batches
    monkeypatch.setattr(rundir, "BATCH_ROWS", 37)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEREDITY_SCORE_CACHE", str(tmp_path / "scores.sqlite"))


def check_against_memory(out: Path, cfg_dict: dict) -> None:
    cfg = config_from_dict(cfg_dict)
    candidates = pq.read_table(out / "generate" / "candidates.parquet").to_pylist()
    assert len(candidates) == len(MODELS) * LIMIT_TRAIN
    # score: every metric on the whole pool in one call, no cache
    context = MetricContext(tokenizer=load_tokenizer(STUDENT), prompts=[r["prompt"] for r in candidates])
    values = score_texts([r["text"] for r in candidates], METRICS, context, cache=False)
    keep = ("candidate_key", "prompt_id", "prompt", "teacher", "sample_index", "text", "finish_reason")
    want_scores = [{**{k: r[k] for k in keep}, **{m: values[m][i] for m in METRICS}} for i, r in enumerate(candidates)]
    scores = pq.read_table(out / "score" / "scores.parquet")
    assert pq.ParquetFile(out / "score" / "scores.parquet").num_row_groups > 1
    assert_rows_equal(scores.to_pylist(), want_scores)

    # select: the rules on the whole pool grouped in memory
    groups = group_by_prompt(want_scores)
    order = [t.label for t in cfg.teachers]
    selections = {arm: select(groups, spec, order) for arm, spec in cfg.select.specs().items()}
    manifest = json.loads((out / "select" / "manifest.json").read_text())
    for arm, rows in selections.items():
        assert_rows_equal(pq.read_table(out / "select" / f"{arm}.parquet").to_pylist(), rows)
        export_selection(rows, out / f"memory-{arm}.jsonl")
        assert (out / "select" / f"{arm}.jsonl").read_bytes() == (out / f"memory-{arm}.jsonl").read_bytes()
        assert manifest["data_hashes"][arm] == stable_hash([(r["prompt"], r["text"]) for r in rows])
    card = data_card(want_scores, selections, METRICS)
    card["target"] = {"metric": "length", "direction": "max"}
    card["rules"] = {arm: parse_spec(spec).to_dict() for arm, spec in cfg.select.specs().items()}
    steps = sweep(groups, cfg.select.active_spec(), order, unit="candidate")
    card["sweep"] = {"unit": "candidate", "steps": dose_response(steps, METRICS)}
    written = json.loads((out / "select" / "card.json").read_text())
    assert written == json.loads(json.dumps(card, default=str))


def test_streamed_score_and_select_equal_the_in_memory_result(data_dir, tmp_path, small_batches):
    source = data_dir / "alpaca_eval" / "gpt-3.5-turbo-0613.json"
    assert len(json.loads(source.read_text(encoding="utf-8"))) > LIMIT_TRAIN  # the limit is applied
    cfg = config(data_dir, variants={
        "short": {"strategy": "best", "metric": "length", "direction": "min"},
        "mix": {"strategy": "weighted", "weights": {"mtld": 1.0, "words": -0.5}},  # pool-wide z-scores
        "wordy": {"strategy": "threshold", "metric": "words", "op": ">=", "value": 120, "then": "random"},
    })
    run(config_from_dict(cfg), tmp_path / "run", until="select")
    check_against_memory(tmp_path / "run", cfg)
    card = json.loads((tmp_path / "run" / "select" / "card.json").read_text())
    assert 0 < card["dropped_prompts"]["wordy"] < LIMIT_TRAIN  # the filter did something, so the check has teeth


def test_a_rule_that_reads_the_text_gets_whole_rows(data_dir, tmp_path, small_batches):
    cfg = config(data_dir, variants={"asks": {"strategy": "test-most-question-marks"}})
    run(config_from_dict(cfg), tmp_path / "run", until="select")
    check_against_memory(tmp_path / "run", cfg)
    asks = pq.read_table(tmp_path / "run" / "select" / "asks.parquet").to_pylist()
    pool = group_by_prompt(pq.read_table(tmp_path / "run" / "score" / "scores.parquet").to_pylist())
    assert all(r["text"].count("?") == max(c["text"].count("?") for c in pool[r["prompt_id"]]) for r in asks)


def test_list_hash_equals_stable_hash_of_the_whole_list(alpaca_texts):
    pairs = [(alpaca_texts[i], alpaca_texts[-i - 1]) for i in range(500)]
    digest = ListHash()
    assert digest.hexdigest() == stable_hash([])
    for pair in pairs:
        digest.update(pair)
    assert digest.hexdigest() == stable_hash(pairs)
    assert digest.hexdigest(24) == stable_hash(pairs, 24)
