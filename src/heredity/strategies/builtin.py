"""The built-in strategies: passive baselines (random, first, teacher), active rules (best,
closest, threshold, constrained, weighted, pareto) and a filter (from_teachers)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from heredity.errors import HeredityError
from heredity.strategies.base import (
    Context,
    Direction,
    Groups,
    NestedRuleParams,
    Op,
    Params,
    Row,
    oriented,
    passes,
    prompts,
    register_strategy,
    value,
)

# --------------------------------------------------------------------------------------------
# Passive baselines


class RandomParams(Params):
    seed: int = 0


@register_strategy("random", RandomParams, passive=True)
def select_random(groups: Groups, params: RandomParams, ctx: Context) -> list[Row]:
    """One candidate per prompt, uniformly at random (seeded)."""
    chosen = []
    for pid, rows in prompts(groups):
        # One generator per prompt, seeded by (seed, prompt id): a prompt's pick does not move
        # when other prompts are added or filtered out. String seeds hash with SHA-512, so the
        # pick is the same in every process. Candidates are sorted by teacher *name* first so
        # the pick depends neither on row order nor on the order teachers are listed in.
        rng = random.Random(f"{params.seed}:{pid}")
        chosen.append(rng.choice(sorted(rows, key=lambda r: (str(r["teacher"]), r["sample_index"]))))
    return chosen


@register_strategy("first", passive=True)
def select_first(groups: Groups, params: Params, ctx: Context) -> list[Row]:
    """The first teacher's first sample (sample_index 0 of the first teacher in order)."""
    return [min(rows, key=ctx.order_key) for _, rows in prompts(groups)]


class TeacherParams(Params):
    name: str = Field(..., description="Teacher label as it appears in the pool.")


@register_strategy("teacher", TeacherParams, passive=True)
def select_teacher(groups: Groups, params: TeacherParams, ctx: Context) -> list[Row]:
    """Every answer from one named teacher (its lowest sample index); prompts it lacks are dropped."""
    chosen = []
    for _, rows in prompts(groups):
        own = [r for r in rows if r["teacher"] == params.name]
        if own:
            chosen.append(min(own, key=ctx.order_key))
    if not chosen and groups:
        # A misspelt name would otherwise drop every prompt without a word.
        teachers = sorted({str(r["teacher"]) for rows in groups.values() for r in rows})
        raise HeredityError(f"strategy 'teacher': no candidates from '{params.name}'; teachers: {', '.join(teachers)}")
    return chosen


# --------------------------------------------------------------------------------------------
# Active rules


class BestParams(Params):
    metric: str
    direction: Direction = "max"

    def metrics(self) -> set[str]:
        return {self.metric}


@register_strategy("best", BestParams)
def select_best(groups: Groups, params: BestParams, ctx: Context) -> list[Row]:
    """The candidate with the highest (max) or lowest (min) value of one metric."""
    return [ctx.pick(rows, lambda r: oriented(r, params.metric, params.direction)) for _, rows in prompts(groups)]


class ClosestParams(Params):
    metric: str
    target: float

    def metrics(self) -> set[str]:
        return {self.metric}


@register_strategy("closest", ClosestParams)
def select_closest(groups: Groups, params: ClosestParams, ctx: Context) -> list[Row]:
    """The candidate whose metric is closest to a target value (e.g. answers of about 100 words)."""

    def score(row: Row) -> float:
        v = value(row, params.metric)
        return -math.inf if math.isnan(v) else -abs(v - params.target)

    return [ctx.pick(rows, score) for _, rows in prompts(groups)]


class Condition(Params):
    """``metric op value``, e.g. ``toxicity <= 0.1``."""

    metric: str
    op: Op
    value: float

    def holds(self, row: Row) -> bool:
        return passes(row, self.metric, self.op, self.value)


class ThresholdParams(NestedRuleParams):
    metric: str
    op: Op
    value: float
    among: Literal["all", "passing"] = Field(
        "all", description="'all': the rule sees every candidate of a kept prompt; 'passing': only those that pass."
    )

    def metrics(self) -> set[str]:
        return {self.metric} | self.then.metrics()


@register_strategy("threshold", ThresholdParams)
def select_threshold(groups: Groups, params: ThresholdParams, ctx: Context) -> list[Row]:
    """Keep prompts whose best candidate passes ``metric op value``, then pick by another rule.

    "Best" is best in the direction of ``op`` (the highest value for >= and >, the lowest for
    <= and <), so a prompt is kept exactly when at least one of its candidates passes. With
    ``among: all`` the follow-up rule may pick a candidate that does not pass itself; that is
    the point of a prompt-level filter (e.g. drop prompts no teacher answers well, then pick
    at random). To pick only among passing candidates use ``among: passing`` or ``constrained``.
    """
    kept: dict[str, Sequence[Row]] = {}
    for pid, rows in prompts(groups):
        passing = [r for r in rows if passes(r, params.metric, params.op, params.value)]
        if passing:
            kept[pid] = rows if params.among == "all" else passing
    return params.then.run(kept, ctx)


class FromTeachersParams(NestedRuleParams):
    teachers: list[str] = Field(..., min_length=1, description="Teacher labels whose candidates the rule sees.")


@register_strategy("from_teachers", FromTeachersParams)
def select_from_teachers(groups: Groups, params: FromTeachersParams, ctx: Context) -> list[Row]:
    """Hand on only the candidates of the named teachers, then pick by another rule.

    The rounds loop wraps each arm's rule in it: from round 2 on, an arm picks among its own
    previous student's candidates (and the original teachers', with ``keep_teachers``), never
    among another arm's. Prompts with no candidate from those teachers are dropped.
    """
    wanted = set(params.teachers)
    kept = {pid: own for pid, rows in prompts(groups) if (own := [r for r in rows if r["teacher"] in wanted])}
    if not kept and groups:
        teachers = sorted({str(r["teacher"]) for rows in groups.values() for r in rows})
        raise HeredityError(f"strategy 'from_teachers': no candidates from {', '.join(sorted(wanted))}; "
                            f"teachers: {', '.join(teachers)}")
    return params.then.run(kept, ctx)


class ConstrainedParams(Params):
    metric: str = Field(..., description="The objective.")
    direction: Direction = "max"
    subject_to: list[Condition] = Field(..., min_length=1, description="Every condition must hold.")

    @field_validator("subject_to", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, Mapping) else v

    def metrics(self) -> set[str]:
        return {self.metric} | {c.metric for c in self.subject_to}


@register_strategy("constrained", ConstrainedParams)
def select_constrained(groups: Groups, params: ConstrainedParams, ctx: Context) -> list[Row]:
    """Maximise (or minimise) one metric subject to conditions on others; infeasible prompts are dropped.

    Example: the longest answer that is not toxic —
    ``{strategy: constrained, metric: words, subject_to: {metric: toxicity, op: "<=", value: 0.1}}``.
    """
    chosen = []
    for _, rows in prompts(groups):
        feasible = [r for r in rows if all(c.holds(r) for c in params.subject_to)]
        if feasible:
            chosen.append(ctx.pick(feasible, lambda r: oriented(r, params.metric, params.direction)))
    return chosen


class WeightedParams(Params):
    weights: dict[str, float] = Field(..., min_length=1, description="Metric → weight; negative weights penalise.")

    def metrics(self) -> set[str]:
        return set(self.weights)


def zscore_stats(rows: Sequence[Row], metrics: Iterable[str]) -> dict[str, tuple[float, float]]:
    """Per metric: mean and population standard deviation (ddof=0) over ``rows``, NaN ignored."""
    stats = {}
    for metric in metrics:
        values = np.array([value(r, metric) for r in rows], dtype=float)
        values = values[~np.isnan(values)]
        stats[metric] = (float(values.mean()), float(values.std())) if values.size else (math.nan, math.nan)
    return stats


def weighted_scores(rows: Sequence[Row], weights: Mapping[str, float],
                    stats: Mapping[str, tuple[float, float]] | None = None) -> list[float]:
    """``sum_m w_m * (x_m - mean_m) / std_m`` per row; statistics over ``rows`` unless given.

    A metric that is constant over the pool (std 0) cannot tell candidates apart and
    contributes 0. A row missing a weighted metric scores -inf (it never wins).
    """
    stats = stats if stats is not None else zscore_stats(rows, weights)
    scores = []
    for row in rows:
        total = 0.0
        for metric, weight in weights.items():
            mean, std = stats[metric]
            v = value(row, metric)
            if math.isnan(v):
                total = -math.inf
                break
            if std > 0:
                total += weight * (v - mean) / std
        scores.append(total)
    return scores


@register_strategy("weighted", WeightedParams)
def select_weighted(groups: Groups, params: WeightedParams, ctx: Context) -> list[Row]:
    """The candidate with the highest weighted sum of z-scored metrics.

    z-scores use the mean and standard deviation over the whole pool given to the strategy
    (every candidate of every prompt), not per prompt: a per-prompt scale would blow up tiny
    differences between near-identical candidates.
    """
    pool = [r for _, rows in prompts(groups) for r in rows]
    stats = zscore_stats(pool, params.weights)
    score = {id(r): s for r, s in zip(pool, weighted_scores(pool, params.weights, stats))}
    return [ctx.pick(rows, lambda r: score[id(r)]) for _, rows in prompts(groups)]


class ParetoParams(Params):
    objectives: dict[str, Direction] = Field(..., min_length=1, description="Metric → max | min.")
    tie_break: Literal["rank_sum", "order"] = Field(
        "rank_sum", description="How one candidate is chosen from a prompt's Pareto front."
    )

    def metrics(self) -> set[str]:
        return set(self.objectives)


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def pareto_front(rows: Sequence[Row], objectives: Mapping[str, Direction]) -> list[Row]:
    """Rows no other row dominates (at least as good on every objective, better on one).

    Rows with identical objective values do not dominate each other, so all stay on the
    front. Keeps the input order.
    """
    vectors = [tuple(oriented(r, m, d) for m, d in objectives.items()) for r in rows]
    return [
        row for i, row in enumerate(rows)
        if not any(_dominates(other, vectors[i]) for j, other in enumerate(vectors) if j != i)
    ]


def average_ranks(values: Sequence[float]) -> list[float]:
    """Rank 1 for the largest value; equal values share the average of their ranks."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start:end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks


@register_strategy("pareto", ParetoParams)
def select_pareto(groups: Groups, params: ParetoParams, ctx: Context) -> list[Row]:
    """One candidate from each prompt's Pareto front over several metrics.

    Tie-break ``rank_sum`` (default): rank every candidate of the prompt on each objective
    (1 = best, average ranks for ties) and take the front member with the smallest sum of
    ranks — the most balanced trade-off, with no need to put metrics on one scale; remaining
    ties go by teacher order, then sample index. ``order``: the first front member in tie order.
    """
    chosen = []
    for _, rows in prompts(groups):
        front = {id(r) for r in pareto_front(rows, params.objectives)}
        if params.tie_break == "order":
            chosen.append(min((r for r in rows if id(r) in front), key=ctx.order_key))
            continue
        rank_sum = [0.0] * len(rows)
        for metric, direction in params.objectives.items():
            for i, rank in enumerate(average_ranks([oriented(r, metric, direction) for r in rows])):
                rank_sum[i] += rank
        on_front = (i for i, r in enumerate(rows) if id(r) in front)
        best = min((rank_sum[i], ctx.order_key(rows[i]), i) for i in on_front)[2]
        chosen.append(rows[best])
    return chosen
