"""Selection strategies on the real AlpacaEval pool (the committed excerpt: 12 teachers x the first 50
prompts, tests/data/alpaca_eval) and on hand-made cases."""

from __future__ import annotations

import itertools
import json
import math
import random

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from heredity.errors import HeredityError
from heredity.metrics import MetricContext, get_metric
from heredity.strategies import (
    STRATEGIES,
    Params,
    average_ranks,
    data_card,
    dose_response,
    export_selection,
    get_strategy,
    group_by_prompt,
    pareto_front,
    register_strategy,
    select,
    spec_metrics,
    sweep,
    to_chat_rows,
    to_sft_dataset,
    weighted_scores,
)

# The order handed to the strategies: it breaks ties, and the sweep adds teachers in it.
TEACHERS = [
    "gpt-3.5-turbo-0613", "Mixtral-8x7B-Instruct-v0.1", "Mixtral-8x7B-Instruct-v0.1_concise",
    "Mixtral-8x7B-Instruct-v0.1_verbose", "Qwen1.5-7B-Chat", "llama-2-13b-chat-hf", "llama-2-7b-chat-hf",
    "vicuna-7b-v1.5", "zephyr-7b-beta", "gemma-7b-it", "alpaca-7b", "falcon-7b-instruct",
]
# AlpacaEval records no finish_reason; answers above this many words are marked as if cut at a
# token cap, so the truncated share in the data card is a real number to check.
CAP_WORDS = 400


@pytest.fixture(scope="module")
def pool(data_dir) -> list[dict]:
    rows = []
    for teacher in TEACHERS:
        path = data_dir / "alpaca_eval" / f"{teacher}.json"
        if not path.is_file():
            pytest.skip(f"{path} missing")
        for i, item in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            rows.append({"prompt_id": f"{i:04d}", "prompt": item["instruction"], "teacher": teacher,
                         "sample_index": 0, "text": item["output"], "finish_reason": "stop"})
    ctx = MetricContext()
    for metric in ("words", "mtld"):
        for row, value in zip(rows, get_metric(metric)([r["text"] for r in rows], ctx)):
            row[metric] = value
    for row in rows:
        if row["words"] > CAP_WORDS:
            row["finish_reason"] = "length"
    return rows


@pytest.fixture(scope="module")
def groups(pool) -> dict[str, list[dict]]:
    return group_by_prompt(pool)


@pytest.fixture(scope="module")
def n_prompts(data_dir) -> int:
    """The prompts in the pool, counted in the files read: every teacher answers the same ones."""
    sizes = {len(json.loads((data_dir / "alpaca_eval" / f"{t}.json").read_text(encoding="utf-8"))) for t in TEACHERS}
    assert len(sizes) == 1, f"teachers answer different numbers of prompts: {sizes}"
    return sizes.pop()


@pytest.fixture(scope="module")
def frame(pool) -> pd.DataFrame:
    return pd.DataFrame(pool)


def tie_key(row: dict) -> tuple:
    return TEACHERS.index(row["teacher"]), row["sample_index"]


def brute_best(rows: list[dict], metric: str, sign: float = 1.0) -> dict:
    top = max(sign * r[metric] for r in rows)
    return min((r for r in rows if sign * r[metric] == top), key=tie_key)


# ------------------------------------------------------------------------------ registry


def test_registry_finds_strategies_by_name_and_lists_them_on_a_typo():
    assert {"best", "closest", "threshold", "constrained", "weighted", "pareto", "random", "first",
            "teacher"} <= set(STRATEGIES)
    assert get_strategy("best").name == "best"
    with pytest.raises(HeredityError, match="unknown selection strategy 'bset'; known: best, closest"):
        get_strategy("bset")


@pytest.mark.parametrize("spec, message", [
    ({"strategy": "best"}, "strategy 'best': missing parameter 'metric'"),
    ({"strategy": "best", "metric": "words", "dir": "max"}, "unknown parameter 'dir' (parameters: metric, direction)"),
    ({"strategy": "best", "metric": "words", "direction": "up"}, "parameter 'direction'"),
    ({"strategy": "constrained", "metric": "words", "subject_to": {"metric": "mtld", "op": "=", "value": 1}},
     "parameter 'subject_to.0.op'"),
    ({"strategy": "threshold", "metric": "mtld", "op": ">=", "value": 1, "then": "frist"},
     "unknown selection strategy 'frist'"),
    ({"metric": "words"}, "needs 'strategy: NAME'"),
])
def test_bad_specs_give_one_line_errors_naming_the_parameter(spec, message):
    with pytest.raises(HeredityError) as info:
        select({}, spec)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_specs_report_every_metric_they_read_and_round_trip():
    spec = {"strategy": "threshold", "metric": "toxicity", "op": "<=", "value": 0.1,
            "then": {"strategy": "weighted", "weights": {"words": 1.0, "mtld": -0.5}}}
    assert spec_metrics(spec) == ["mtld", "toxicity", "words"]
    from heredity.strategies import parse_spec
    dumped = parse_spec(spec).to_dict()
    assert dumped["then"] == {"strategy": "weighted", "weights": {"words": 1.0, "mtld": -0.5}}
    assert parse_spec(dumped).to_dict() == dumped


def test_a_metric_that_was_not_scored_is_named(groups):
    with pytest.raises(HeredityError, match="reads 'toxicity', which was not scored .*words, mtld"):
        select(groups, {"strategy": "constrained", "metric": "words",
                        "subject_to": {"metric": "toxicity", "op": "<=", "value": 0.1}})


def test_adding_a_strategy_is_a_decorated_function(groups):
    class Cap(Params):
        cap: int

    @register_strategy("longest-under-cap", Cap)
    def longest_under_cap(groups, params, ctx):
        """The longest answer of at most `cap` words."""
        return [ctx.pick(ok, lambda r: r["words"]) for _, rows in sorted(groups.items())
                if (ok := [r for r in rows if r["words"] <= params.cap])]

    try:
        chosen = select(groups, {"strategy": "longest-under-cap", "cap": 100}, TEACHERS)
        assert chosen and all(r["words"] <= 100 for r in chosen)
        assert STRATEGIES["longest-under-cap"].description == "The longest answer of at most `cap` words."
    finally:
        del STRATEGIES["longest-under-cap"]


def test_a_strategy_returning_a_prompt_twice_is_caught(groups):
    @register_strategy("broken")
    def broken(groups, params, ctx):
        return [rows[0] for rows in groups.values()] * 2

    try:
        with pytest.raises(HeredityError, match="returned prompt '0000' twice"):
            select(groups, "broken")
    finally:
        del STRATEGIES["broken"]


# ------------------------------------------------------------------------------ real pool: best vs random


@pytest.mark.parametrize("metric", ["words", "mtld"])
def test_max_selection_vs_random_with_data_card_checked_directly(pool, groups, frame, metric, n_prompts):
    active = select(groups, {"strategy": "best", "metric": metric, "direction": "max"}, TEACHERS)
    passive = select(groups, {"strategy": "random", "seed": 0}, TEACHERS)
    assert len(groups) == n_prompts
    assert len(active) == len(passive) == n_prompts
    assert [r["prompt_id"] for r in active] == sorted(groups)
    for row in active:
        assert row is brute_best(groups[row["prompt_id"]], metric)

    card = data_card(pool, {"passive": passive, "active": active}, ["words", "mtld"])
    assert card["pool_size"] == len(pool) == len(TEACHERS) * n_prompts and card["prompts"] == n_prompts
    assert card["dropped_prompts"] == {"passive": 0, "active": 0}
    pool_values = frame[metric].to_numpy()
    entry = card["metrics"][metric]
    assert entry["pool"]["mean"] == pytest.approx(pool_values.mean())
    for name, q in (("q25", 0.25), ("median", 0.5), ("q75", 0.75)):
        assert entry["pool"][name] == pytest.approx(frame[metric].quantile(q))
    for arm, rows in (("passive", passive), ("active", active)):
        chosen = pd.DataFrame(rows)
        values = chosen[metric].to_numpy()
        assert entry[arm]["mean"] == pytest.approx(values.mean())
        assert entry[arm]["q25"] == pytest.approx(np.percentile(values, 25))
        assert entry[arm]["median"] == pytest.approx(np.median(values))
        assert entry[arm]["q75"] == pytest.approx(np.percentile(values, 75))
        shift = 100 * (values.mean() - pool_values.mean()) / abs(pool_values.mean())
        assert entry[arm]["shift_pct"] == pytest.approx(shift)
        shares = chosen["teacher"].value_counts(normalize=True)
        for teacher in TEACHERS:
            assert card["teacher_share"][arm][teacher] == pytest.approx(shares.get(teacher, 0.0))
        assert card["truncated_share"][arm] == pytest.approx((chosen["finish_reason"] == "length").mean())

    # Steering moves the target far more than chance does. (On the 50-prompt excerpt the random arm's
    # shift is noisier than on all 805 prompts, but seed 0 stays well inside 10%: 1.4% words, 1.7% mtld.)
    assert abs(entry["passive"]["shift_pct"]) < 10
    assert entry["active"]["shift_pct"] > (80 if metric == "words" else 40)
    if metric == "words":
        assert card["truncated_share"]["active"] > 3 * card["truncated_share"]["passive"]
        # The verbose Mixtral is the longest teacher; it must win more than its fair share.
        assert card["teacher_share"]["active"]["Mixtral-8x7B-Instruct-v0.1_verbose"] > 2 / 12


def test_random_is_seeded_uniform_and_independent_of_row_order(pool, groups, n_prompts):
    a = select(groups, {"strategy": "random", "seed": 7}, TEACHERS)
    shuffled = list(pool)
    random.Random(1).shuffle(shuffled)
    b = select(group_by_prompt(shuffled), {"strategy": "random", "seed": 7}, TEACHERS)
    assert [(r["prompt_id"], r["teacher"]) for r in a] == [(r["prompt_id"], r["teacher"]) for r in b]
    assert [r["teacher"] for r in a] != [r["teacher"] for r in select(groups, {"strategy": "random", "seed": 8})]
    assert len({r["teacher"] for r in a}) == 12
    # Uniform: 1/12 = 0.083. One seed over the excerpt's 50 prompts is only ~4 picks a teacher, too few
    # for a share band (the binomial sd is ~0.04), so pool 20 seeds: 1000 draws, sd ~0.009 a share.
    draws = [r["teacher"] for seed in range(7, 27) for r in select(groups, {"strategy": "random", "seed": seed})]
    assert len(draws) == 20 * n_prompts
    shares = pd.Series(draws).value_counts(normalize=True)
    assert len(shares) == 12 and shares.between(0.04, 0.14).all()
    # A prompt's pick does not depend on which other prompts are in the pool.
    half = {pid: rows for pid, rows in groups.items() if int(pid) % 2 == 0}
    picks = {r["prompt_id"]: r["teacher"] for r in a}
    assert all(picks[r["prompt_id"]] == r["teacher"] for r in select(half, {"strategy": "random", "seed": 7}))
    # Nor on the order the teachers are listed in (a passive arm should not move when a config
    # reorders its teachers).
    reordered = select(groups, {"strategy": "random", "seed": 7}, TEACHERS[::-1])
    assert [r["teacher"] for r in reordered] == [r["teacher"] for r in a]


def test_first_and_teacher_baselines(groups, n_prompts):
    first = select(groups, "first", TEACHERS)
    assert {r["teacher"] for r in first} == {TEACHERS[0]}
    assert {r["teacher"] for r in select(groups, "first", TEACHERS[::-1])} == {TEACHERS[-1]}
    zephyr = select(groups, {"strategy": "teacher", "name": "zephyr-7b-beta"}, TEACHERS)
    assert len(zephyr) == n_prompts and {r["teacher"] for r in zephyr} == {"zephyr-7b-beta"}
    with pytest.raises(HeredityError, match="no candidates from 'zephyr'; teachers: Mixtral"):
        select(groups, {"strategy": "teacher", "name": "zephyr"})


def test_closest_picks_the_candidate_nearest_the_target(groups):
    chosen = select(groups, {"strategy": "closest", "metric": "words", "target": 100}, TEACHERS)
    for row in chosen:
        rows = groups[row["prompt_id"]]
        assert row is min(rows, key=lambda r: (abs(r["words"] - 100), tie_key(r)))
    assert np.median([r["words"] for r in chosen]) == pytest.approx(100, abs=10)


# ------------------------------------------------------------------------------ filters and constraints


def test_constrained_picks_the_longest_feasible_candidate_by_brute_force(pool, groups):
    spec = {"strategy": "constrained", "metric": "words", "subject_to": {"metric": "mtld", "op": ">=", "value": 80}}
    chosen = {r["prompt_id"]: r for r in select(groups, spec, TEACHERS)}
    infeasible = 0
    for pid, rows in groups.items():
        feasible = [r for r in rows if r["mtld"] >= 80]
        if not feasible:
            infeasible += 1
            assert pid not in chosen
        else:
            assert chosen[pid] is brute_best(feasible, "words")
    # The constraint bites on some prompts, not most (8 of the excerpt's 50).
    assert 0.05 * len(groups) < infeasible < 0.5 * len(groups)
    card = data_card(pool, {"active": list(chosen.values())}, ["words"])
    assert card["dropped_prompts"]["active"] == infeasible

    # Several conditions, minimising: the shortest answer with 50..300 words.
    spec = {"strategy": "constrained", "metric": "words", "direction": "min",
            "subject_to": [{"metric": "words", "op": ">=", "value": 50}, {"metric": "words", "op": "<=", "value": 300}]}
    for row in select(groups, spec, TEACHERS):
        feasible = [r for r in groups[row["prompt_id"]] if 50 <= r["words"] <= 300]
        assert row is brute_best(feasible, "words", sign=-1.0)


def test_threshold_filters_prompts_then_applies_its_rule(groups):
    rule = {"strategy": "best", "metric": "words"}
    base = {"strategy": "threshold", "metric": "mtld", "op": ">=", "value": 100, "then": rule}
    kept = {pid for pid, rows in groups.items() if max(r["mtld"] for r in rows) >= 100}
    over_all = select(groups, base, TEACHERS)
    assert {r["prompt_id"] for r in over_all} == kept and 0 < len(kept) < len(groups)
    for row in over_all:  # the rule sees every candidate of a kept prompt
        assert row is brute_best(groups[row["prompt_id"]], "words")
    assert any(r["mtld"] < 100 for r in over_all)
    passing = select(groups, {**base, "among": "passing"}, TEACHERS)
    constrained = select(groups, {"strategy": "constrained", "metric": "words",
                                  "subject_to": {"metric": "mtld", "op": ">=", "value": 100}}, TEACHERS)
    assert [id(r) for r in passing] == [id(r) for r in constrained]
    # "< t" keeps prompts whose lowest value is below t.
    low = select(groups, {**base, "op": "<", "value": 20, "then": "first"}, TEACHERS)
    assert {r["prompt_id"] for r in low} == {pid for pid, rows in groups.items() if min(r["mtld"] for r in rows) < 20}


# ------------------------------------------------------------------------------ weighted


def test_weighted_scores_are_pool_z_scores(frame, pool, groups):
    weights = {"words": 1.0, "mtld": -0.5}
    expected = sum(w * (frame[m] - frame[m].mean()) / frame[m].std(ddof=0) for m, w in weights.items())
    assert np.allclose(weighted_scores(pool, weights), expected.to_numpy())

    chosen = select(groups, {"strategy": "weighted", "weights": weights}, TEACHERS)
    score = {id(r): s for r, s in zip(pool, expected)}
    for row in chosen:
        rows = groups[row["prompt_id"]]
        assert row is min(rows, key=lambda r: (-score[id(r)], tie_key(r)))
    # Diversity is penalised, so the selection is less diverse than best-by-words alone.
    longest = select(groups, {"strategy": "best", "metric": "words"}, TEACHERS)
    assert np.mean([r["mtld"] for r in chosen]) < np.mean([r["mtld"] for r in longest])


def test_weighted_ignores_constant_metrics_and_never_picks_missing_values():
    rows = [{"prompt_id": "p", "teacher": "t", "sample_index": i, "a": a, "c": 5.0} for i, a in enumerate([1, 2, 3])]
    assert weighted_scores(rows, {"a": 1.0, "c": 10.0}) == pytest.approx([-1.2247449, 0.0, 1.2247449])
    rows[2]["a"] = math.nan
    assert weighted_scores(rows, {"a": 1.0})[2] == -math.inf
    assert select({"p": rows}, {"strategy": "weighted", "weights": {"a": 1.0}})[0]["sample_index"] == 1


# ------------------------------------------------------------------------------ pareto


def cands(*values, objectives=("a", "b")):
    return [{"prompt_id": "p", "teacher": f"t{i}", "sample_index": 0, **dict(zip(objectives, v))}
            for i, v in enumerate(values)]


def test_pareto_front_on_hand_made_cases():
    rows = cands((3, 1), (1, 3), (2, 2), (1, 1), (3, 1), (2, 1))
    front = pareto_front(rows, {"a": "max", "b": "max"})
    assert [r["teacher"] for r in front] == ["t0", "t1", "t2", "t4"]  # equal vectors both stay
    # Minimising b turns the picture: (3,1) dominates everything else with a <= 3.
    assert [r["teacher"] for r in pareto_front(rows, {"a": "max", "b": "min"})] == ["t0", "t4"]
    # A missing value is worse than any real one.
    assert [r["teacher"] for r in pareto_front(cands((1, 1), (math.nan, 5)), {"a": "max", "b": "max"})] == ["t0", "t1"]
    assert [r["teacher"] for r in pareto_front(cands((1, 5), (math.nan, 5)), {"a": "max", "b": "max"})] == ["t0"]
    # Three objectives: nothing dominates a point that is best on one of them.
    rows3 = cands((1, 1, 9), (5, 5, 0), (4, 4, 0), objectives=("a", "b", "c"))
    assert [r["teacher"] for r in pareto_front(rows3, {"a": "max", "b": "max", "c": "max"})] == ["t0", "t1"]


def test_pareto_breaks_ties_by_rank_sum_then_order():
    assert average_ranks([3, 1, 2, 1, 3]) == [1.5, 4.5, 3.0, 4.5, 1.5]
    rows = cands((3, 1), (1, 3), (2, 2), (1, 1), (3, 1))
    order = [f"t{i}" for i in range(5)]
    spec = {"strategy": "pareto", "objectives": {"a": "max", "b": "max"}}
    # Rank sums: t0 1.5+4 = 5.5, t1 4.5+1 = 5.5, t2 3+2 = 5, t4 5.5: the balanced (2, 2) wins.
    assert select({"p": rows}, spec, order)[0]["teacher"] == "t2"
    assert select({"p": rows}, {**spec, "tie_break": "order"}, order)[0]["teacher"] == "t0"
    # Without (2, 2), t0, t1 and t4 tie on 4.5 (ranks among 4 candidates): teacher order decides.
    rest = [r for r in rows if r["teacher"] != "t2"]
    assert select({"p": rest}, spec, order)[0]["teacher"] == "t0"
    assert select({"p": rest}, spec, ["t4", "t1", "t0"])[0]["teacher"] == "t4"


def test_pareto_choices_on_the_real_pool_are_non_dominated(groups, n_prompts):
    objectives = {"words": "max", "mtld": "max"}
    chosen = select(groups, {"strategy": "pareto", "objectives": objectives}, TEACHERS)
    assert len(chosen) == n_prompts
    for row in chosen:
        rows = groups[row["prompt_id"]]
        assert not any(r["words"] >= row["words"] and r["mtld"] >= row["mtld"]
                       and (r["words"] > row["words"] or r["mtld"] > row["mtld"]) for r in rows)


# ------------------------------------------------------------------------------ sweep


def test_sweep_over_teachers_is_monotone_from_first_to_best(groups, n_prompts):
    rule = {"strategy": "best", "metric": "words", "direction": "max"}
    steps = sweep(groups, rule, TEACHERS, unit="candidate")
    assert list(steps) == list(range(1, 13))
    assert [id(r) for r in steps[1]] == [id(r) for r in select(groups, "first", TEACHERS)]
    assert [id(r) for r in steps[12]] == [id(r) for r in select(groups, rule, TEACHERS)]
    means = [np.mean([r["words"] for r in steps[k]]) for k in steps]
    assert all(b >= a for a, b in itertools.pairwise(means)) and means[-1] > 1.5 * means[0]
    # Per prompt too, not only on average.
    for k in range(1, 12):
        assert all(b["words"] >= a["words"] for a, b in zip(steps[k], steps[k + 1]))
    response = dose_response(steps, ["words"])
    assert response[3] == {"prompts": n_prompts, "words": pytest.approx(means[2])}


def test_sweep_over_samples(pool):
    # Reshape the pool into 3 teachers x 4 samples so sample_index means something.
    rows = [dict(r, teacher=f"T{TEACHERS.index(r['teacher']) // 4}", sample_index=TEACHERS.index(r["teacher"]) % 4)
            for r in pool]
    grouped = group_by_prompt(rows)
    order = ["T0", "T1", "T2"]
    rule = {"strategy": "best", "metric": "mtld"}
    steps = sweep(grouped, rule, order)
    assert list(steps) == [1, 2, 3, 4]
    means = [np.mean([r["mtld"] for r in steps[k]]) for k in steps]
    assert all(b >= a for a, b in itertools.pairwise(means))
    # k' = 1 is best-of-teachers over each teacher's sample 0; k' = k is the whole pool.
    first_samples = {pid: [r for r in rs if r["sample_index"] == 0] for pid, rs in grouped.items()}
    assert [id(r) for r in steps[1]] == [id(r) for r in select(first_samples, rule, order)]
    assert [id(r) for r in steps[4]] == [id(r) for r in select(grouped, rule, order)]
    # k' = j*T in candidate units equals k' = j in sample units.
    by_candidate = sweep(grouped, rule, order, unit="candidate", ks=[3, 6])
    assert [id(r) for r in by_candidate[3]] == [id(r) for r in steps[1]]
    assert [id(r) for r in by_candidate[6]] == [id(r) for r in steps[2]]
    # With one teacher, k' = 1 is exactly `first`.
    one = {pid: [r for r in rs if r["teacher"] == "T1"] for pid, rs in grouped.items()}
    assert [id(r) for r in sweep(one, rule, order, ks=[1])[1]] == [id(r) for r in select(one, "first", order)]


def test_first_k_is_one_sweep_step_as_an_arm(pool):
    """``first_k`` trains a student at one steering strength: it must pick exactly what the
    sweep's step k picks, by sample and by candidate, and see nothing beyond the first k."""
    rows = [dict(r, teacher=f"T{TEACHERS.index(r['teacher']) // 4}", sample_index=TEACHERS.index(r["teacher"]) % 4)
            for r in pool]
    grouped = group_by_prompt(rows)
    order = ["T0", "T1", "T2"]
    rule = {"strategy": "best", "metric": "mtld"}
    steps = sweep(grouped, rule, order)
    for k in (1, 2, 4):
        picked = select(grouped, {"strategy": "first_k", "k": k, "then": rule}, order)
        assert [id(r) for r in picked] == [id(r) for r in steps[k]]
        assert max(r["sample_index"] for r in picked) == k - 1
    by_candidate = sweep(grouped, rule, order, unit="candidate", ks=[5])
    picked = select(grouped, {"strategy": "first_k", "k": 5, "unit": "candidate", "then": rule}, order)
    assert [id(r) for r in picked] == [id(r) for r in by_candidate[5]]
    assert spec_metrics({"strategy": "first_k", "k": 2, "then": rule}) == ["mtld"]
    with pytest.raises(HeredityError, match="k"):
        select(grouped, {"strategy": "first_k", "k": 0, "then": rule}, order)


# ------------------------------------------------------------------------------ ties


ALL_SPECS = [
    "first",
    {"strategy": "random", "seed": 3},
    {"strategy": "teacher", "name": "b"},
    {"strategy": "best", "metric": "x"},
    {"strategy": "best", "metric": "x", "direction": "min"},
    {"strategy": "closest", "metric": "x", "target": 0.0},
    {"strategy": "threshold", "metric": "x", "op": ">=", "value": 1.0, "then": {"strategy": "best", "metric": "y"}},
    {"strategy": "constrained", "metric": "x", "subject_to": {"metric": "y", "op": "<=", "value": 2.0}},
    {"strategy": "weighted", "weights": {"x": 1.0, "y": -1.0}},
    {"strategy": "pareto", "objectives": {"x": "max", "y": "min"}},
]


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s if isinstance(s, str) else s["strategy"])
def test_ties_break_by_teacher_order_then_sample_index_whatever_the_row_order(spec):
    order = ["c", "a", "b"]
    rows = [{"prompt_id": f"p{p}", "prompt": "q", "teacher": t, "sample_index": i, "text": "", "finish_reason": "stop",
             "x": 1.0, "y": 2.0} for p in range(20) for t in ("a", "b", "c", "zz") for i in range(3)]
    picks = set()
    for seed in range(5):
        shuffled = list(rows)
        random.Random(seed).shuffle(shuffled)
        chosen = select(group_by_prompt(shuffled), spec, order)
        assert len(chosen) == 20
        picks.add(tuple((r["prompt_id"], r["teacher"], r["sample_index"]) for r in chosen))
    assert len(picks) == 1
    (chosen,) = picks
    if spec == {"strategy": "teacher", "name": "b"}:
        assert {(t, i) for _, t, i in chosen} == {("b", 0)}
    elif not isinstance(spec, dict) or spec["strategy"] != "random":
        assert {(t, i) for _, t, i in chosen} == {("c", 0)}  # first in order, lowest sample


# ------------------------------------------------------------------------------ data card edge cases


def test_data_card_counts_drops_truncation_and_survives_an_empty_selection():
    pool = [{"prompt_id": p, "teacher": t, "sample_index": 0, "finish_reason": fr, "x": x}
            for p, t, fr, x in [("1", "a", "length", 1.0), ("1", "b", "stop", 3.0),
                                ("2", "a", "stop", 5.0), ("2", "b", "stop", math.nan)]]
    card = data_card(pool, {"kept": [pool[0]], "none": []}, ["x"])
    assert card["dropped_prompts"] == {"kept": 1, "none": 2}
    assert card["truncated_share"] == {"kept": 1.0, "none": None}
    assert card["teacher_share"] == {"kept": {"a": 1.0, "b": 0.0}, "none": {"a": None, "b": None}}
    assert card["metrics"]["x"]["pool"] == {"mean": 3.0, "q25": 2.0, "median": 3.0, "q75": 4.0}  # NaN left out
    assert card["metrics"]["x"]["kept"]["shift_pct"] == pytest.approx(-200 / 3)
    assert card["metrics"]["x"]["none"]["mean"] is None and card["metrics"]["x"]["none"]["shift_pct"] is None


# ------------------------------------------------------------------------------ export


def test_export_round_trips_through_jsonl_parquet_and_datasets(groups, tmp_path):
    chosen = select(groups, {"strategy": "best", "metric": "mtld"}, TEACHERS)[:50]

    path = export_selection(chosen, tmp_path / "active.jsonl", system_prompt="Be brief.")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 50
    for line, row in zip(lines, chosen):
        assert json.loads(line) == {"messages": [{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": row["prompt"]},
                                                 {"role": "assistant", "content": row["text"]}]}

    path = export_selection(chosen, tmp_path / "active.parquet", metadata=True)
    back = pq.read_table(path).to_pylist()
    assert back == to_chat_rows(chosen, metadata=True)
    assert back[0]["messages"][0]["role"] == "user" and back[0]["teacher"] == chosen[0]["teacher"]
    assert pq.read_table(export_selection([], tmp_path / "empty.parquet")).column_names == ["messages"]
    with pytest.raises(HeredityError, match="export writes .jsonl or .parquet"):
        export_selection(chosen, tmp_path / "active.csv")

    # SFTTrainer's two conversational formats: a "messages" column (language modelling) and
    # "prompt"/"completion" lists of {role, content} (loss on the completion only).
    ds = to_sft_dataset(chosen)
    assert ds.column_names == ["messages"] and len(ds) == 50
    assert ds[0]["messages"] == [{"role": "user", "content": chosen[0]["prompt"]},
                                 {"role": "assistant", "content": chosen[0]["text"]}]
    pc = to_sft_dataset(chosen, system_prompt="", fmt="prompt-completion")
    assert pc.column_names == ["prompt", "completion"]
    assert [m["role"] for m in pc[0]["prompt"]] == ["system", "user"] and pc[0]["prompt"][0]["content"] == ""
    assert pc[0]["completion"] == [{"role": "assistant", "content": chosen[0]["text"]}]
