"""Selection on a real multi-source pool: AlpacaEval outputs of several models."""

import json
import statistics
from pathlib import Path

import pytest

from heredity.metrics import MetricContext, get_metric
from heredity.select import data_card, group_by_prompt, select_best, select_random

TEACHERS = ["Mixtral-8x7B-Instruct-v0.1_concise", "Mixtral-8x7B-Instruct-v0.1_verbose", "gpt-3.5-turbo-0613",
            "llama-2-7b-chat-hf"]


@pytest.fixture(scope="module")
def pool(data_dir: Path) -> list[dict]:
    rows = []
    for teacher in TEACHERS:
        path = data_dir / "alpaca_eval" / f"{teacher}.json"
        if not path.is_file():
            pytest.skip(f"{path} missing")
        for i, item in enumerate(json.loads(path.read_text())):
            rows.append({"prompt_id": f"{i:04d}", "prompt": item["instruction"], "teacher": teacher,
                         "sample_index": 0, "text": item["output"], "finish_reason": "stop"})
    ctx = MetricContext()
    for metric in ("words", "mtld"):
        for row, value in zip(rows, get_metric(metric)([r["text"] for r in rows], ctx)):
            row[metric] = value
    return rows


def test_max_words_picks_the_longest_answer_per_prompt(pool):
    groups = group_by_prompt(pool)
    chosen = select_best(groups, "words", "max", TEACHERS)
    assert len(chosen) == 805
    for row in chosen:
        assert row["words"] == max(r["words"] for r in groups[row["prompt_id"]])
    shortest = select_best(groups, "words", "min", TEACHERS)
    assert statistics.fmean(r["words"] for r in chosen) > 2 * statistics.fmean(r["words"] for r in shortest)


def test_ties_break_by_teacher_order(pool):
    groups = {"p": [dict(pool[0], teacher=t, words=5.0) for t in reversed(TEACHERS)]}
    assert select_best(groups, "words", "max", TEACHERS)[0]["teacher"] == TEACHERS[0]


def test_random_selection_is_seeded_and_spreads_over_teachers(pool):
    groups = group_by_prompt(pool)
    a, b = select_random(groups, 7), select_random(groups, 7)
    assert [r["teacher"] for r in a] == [r["teacher"] for r in b]
    assert [r["teacher"] for r in a] != [r["teacher"] for r in select_random(groups, 8)]
    shares = [sum(r["teacher"] == t for r in a) / len(a) for t in TEACHERS]
    assert all(0.18 < s < 0.32 for s in shares)  # uniform would be 0.25 each


def test_data_card_matches_direct_computation(pool):
    groups = group_by_prompt(pool)
    selections = {"passive": select_random(groups, 0), "active": select_best(groups, "mtld", "max", TEACHERS)}
    card = data_card(pool, selections, ["words", "mtld"])
    pool_mean = statistics.fmean(r["mtld"] for r in pool)
    active_mean = statistics.fmean(r["mtld"] for r in selections["active"])
    assert card["metrics"]["mtld"]["pool"]["mean"] == pytest.approx(pool_mean)
    assert card["metrics"]["mtld"]["active"]["mean"] == pytest.approx(active_mean)
    assert card["metrics"]["mtld"]["active"]["shift_pct"] == pytest.approx(100 * (active_mean - pool_mean) / pool_mean)
    assert card["metrics"]["mtld"]["active"]["shift_pct"] > 10
    verbose_wins = sum(r["teacher"] == TEACHERS[1] for r in selections["active"]) / 805
    assert card["teacher_share"]["active"][TEACHERS[1]] == pytest.approx(verbose_wins)
    assert sum(card["teacher_share"]["passive"].values()) == pytest.approx(1.0)
