"""Preference pairs (``select.preference``) on the real AlpacaEval pool (the committed excerpt: 12 models x
the first 50 instructions, replayed: no model runs) and on hand-made cases for ties and undefined values."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
from test_replay import replay_config

from heredity.core.rundir import read_json
from heredity.errors import HeredityError
from heredity.pipeline import run
from heredity.plan import config_from_dict
from heredity.strategies import build_pairs, group_by_prompt


def pool_run(data_dir, tmp_path, preference: dict, **select):
    files = sorted((data_dir / "alpaca_eval").glob("*.json"))
    cfg = config_from_dict(replay_config(data_dir, files, select={
        "metric": "words", "direction": "max", "preference": preference, **select}))
    out = tmp_path / "run"
    run(cfg, out, until="select")
    return out


def test_worst_rejected_pairs_the_longest_and_shortest_answer_of_each_prompt(data_dir, tmp_path):
    out = pool_run(data_dir, tmp_path, {"dpo": {}, "dpo-random": {"rejected": "random", "seed": 3}})
    pool = pq.read_table(out / "score" / "scores.parquet").to_pylist()
    by_prompt = group_by_prompt(pool)
    pairs = pq.read_table(out / "select" / "dpo.pairs.parquet").to_pylist()
    card = read_json(out / "select" / "card.json")

    # TRL's conversational preference schema: prompt messages, one assistant message on each side
    assert set(pairs[0]) >= {"prompt", "chosen", "rejected", "margin", "prompt_id"}
    assert pairs[0]["prompt"][-1]["role"] == "user" and pairs[0]["chosen"][0]["role"] == "assistant"
    dropped = card["pairs"]["dpo"]["dropped"]
    assert len(pairs) + sum(dropped.values()) == len(by_prompt) == 50
    for pair in pairs:
        rows = by_prompt[pair["prompt_id"]]
        words = sorted(r["words"] for r in rows)
        assert pair["chosen_score"] == words[-1] and pair["rejected_score"] == words[0]
        assert pair["margin"] == pytest.approx(words[-1] - words[0]) and pair["margin"] > 0
        texts = {r["text"] for r in rows}
        assert pair["chosen"][0]["content"] in texts and pair["rejected"][0]["content"] in texts
        assert pair["chosen"][0]["content"] != pair["rejected"][0]["content"]
        assert pair["prompt"][-1]["content"] == rows[0]["prompt"]

    # the chosen side is exactly what the active rule keeps on the same prompts
    active = {r["prompt_id"]: r["text"] for r in pq.read_table(out / "select" / "active.parquet").to_pylist()}
    assert all(active[p["prompt_id"]] == p["chosen"][0]["content"] for p in pairs)

    # a random rejected candidate is a worse one on words (ties dropped), never the chosen one, and seeded
    random_pairs = pq.read_table(out / "select" / "dpo-random.pairs.parquet").to_pylist()
    assert random_pairs and all(p["margin"] > 0 for p in random_pairs)
    mean = {arm: sum(p["margin"] for p in rows) / len(rows) for arm, rows in (("worst", pairs), ("random", random_pairs))}
    assert mean["random"] < mean["worst"]

    entry = card["pairs"]["dpo"]
    assert entry["pairs"] == len(pairs)
    assert entry["margin"]["mean"] == pytest.approx(sum(p["margin"] for p in pairs) / len(pairs))
    share = entry["rejected_teacher_share"]
    assert sum(share.values()) == pytest.approx(1.0)
    # the shortest answers come from few teachers; their share on the card is counted off the pairs
    top = max(share, key=share.get)
    assert share[top] == pytest.approx(sum(p["rejected_teacher"] == top for p in pairs) / len(pairs))
    assert card["rules"]["dpo"]["strategy"] == "pairs"
    manifest = read_json(out / "select" / "manifest.json")
    assert {"dpo", "dpo-random"} <= set(manifest["data_hashes"])


def test_pairs_load_as_a_trl_preference_dataset(data_dir, tmp_path):
    from datasets import load_dataset
    from trl.data_utils import is_conversational

    out = pool_run(data_dir, tmp_path, {"dpo": {"direction": "min", "metric": "mtld"}})
    dataset = load_dataset("parquet", data_files=str(out / "select" / "dpo.pairs.parquet"), split="train")
    assert is_conversational(dataset[0])
    # min mtld: the chosen side has the lower MTLD
    assert all(row["chosen_score"] < row["rejected_score"] for row in dataset)


def test_ties_undefined_values_and_equal_texts_are_dropped_and_counted():
    def row(pid, i, text, value):
        return {"prompt_id": pid, "teacher": "t", "sample_index": i, "text": text, "prompt": "p",
                "finish_reason": "stop", "m": value}

    pool = [row("tie", 0, "a", 1.0), row("tie", 1, "b", 1.0),
            row("nan", 0, "a", math.nan), row("nan", 1, "b", None),
            row("alone", 0, "a", 2.0), row("alone", 1, "b", None),
            row("same", 0, "a", 2.0), row("same", 1, "a", 1.0),
            row("small", 0, "a", 2.0), row("small", 1, "b", 1.5),
            row("kept", 0, "a", 5.0), row("kept", 1, "b", 1.0), row("kept", 2, "c", 3.0)]
    rule = {"metric": "m", "direction": "max", "chosen": {"strategy": "best", "metric": "m"},
            "rejected": "worst", "min_margin": 0.5, "seed": 0}
    pairs, dropped = build_pairs(group_by_prompt(pool), rule)
    assert [(c["prompt_id"], c["text"], r["text"], m) for c, r, m in pairs] == [("kept", "a", "b", 4.0)]
    assert dropped == {"no_chosen": 0, "chosen_undefined": 1, "no_other_candidate": 2, "tie": 1, "below_margin": 1}


def test_a_rule_that_yields_no_pair_stops_before_writing(data_dir, tmp_path):
    with pytest.raises(HeredityError, match="preference arm 'dpo' has no pair from 50 prompts"):
        pool_run(data_dir, tmp_path, {"dpo": {"min_margin": 1e9}})
    assert not (tmp_path / "run" / "select" / "manifest.json").exists()


def test_preference_config_is_checked_before_any_work():
    base = {"prompts": {"source": "bundled:quickstart"}, "k": 1}
    with pytest.raises(HeredityError, match="a pair needs two candidates per prompt"):
        config_from_dict({**base, "select": {"preference": {"dpo": {}}}})
    with pytest.raises(HeredityError, match="init 'nope' is neither base nor an SFT arm"):
        config_from_dict({**base, "k": 2, "select": {"preference": {"dpo": {"init": "nope"}}}})
    with pytest.raises(HeredityError, match="loss"):
        config_from_dict({**base, "k": 2, "select": {"preference": {"dpo": {"loss": ["dpo"]}}}})
    with pytest.raises(HeredityError, match="loss_weights has 1 weights for 2 losses"):
        config_from_dict({**base, "k": 2, "select": {"preference": {"dpo": {"loss": ["sigmoid", "sft"],
                                                                           "loss_weights": [1.0]}}}})
    cfg = config_from_dict({**base, "k": 2, "select": {"preference": {"rpo": {"loss": ["sigmoid", "sft"],
                                                                                "init": "active"}}}})
    assert cfg.select.arms() == ("passive", "active", "rpo")
