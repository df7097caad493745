"""Selection strategies: which candidate, if any, each prompt keeps.

A strategy is a small pure function over the scored pool grouped by prompt
(``{prompt_id: [row, ...]}``; a row holds ``prompt_id``, ``prompt``, ``teacher``,
``sample_index``, ``text``, ``finish_reason`` and one float per metric). It returns the kept
rows: at most one per prompt, in sorted prompt-id order. Filters may drop prompts.

Strategies are found by name in ``STRATEGIES``. Adding one takes a parameter model and a
function::

    class LongestParams(Params):
        cap: int = 500

    @register_strategy("longest-under-cap", LongestParams)
    def longest_under_cap(groups, params, ctx):
        ...

A *spec* names a strategy and its parameters, as a config writes it:
``"random"`` or ``{"strategy": "best", "metric": "words", "direction": "max"}``.
``select(groups, spec, teacher_order=...)`` validates the spec, checks that every metric it
reads was scored, and runs it.

Built-in strategies and their parameters:

- passive: ``random`` (seed), ``first``, ``teacher`` (name);
- ``best`` (metric, direction), ``closest`` (metric, target);
- ``threshold`` (metric, op, value, then: a spec, among: all | passing) — a prompt filter;
- ``constrained`` (metric, direction, subject_to: one or several {metric, op, value});
- ``weighted`` (weights: {metric: weight}) on pool-wide z-scores;
- ``pareto`` (objectives: {metric: max | min}, tie_break: rank_sum | order).

``sweep`` runs a rule on the first k' candidates per prompt (steering strength),
``data_card`` summarises what a selection changed, and ``export_selection`` /
``to_sft_dataset`` turn a selection into chat data for TRL's SFTTrainer.

Conventions shared by every built-in strategy:

- Ties break by the caller's teacher order, then ``sample_index`` (teachers missing from the
  order come after it, by name), so a selection never depends on the order of pool rows.
- A missing metric value (NaN or None) never wins: it ranks below every real value and
  fails every threshold or constraint.
"""

from __future__ import annotations

import json
import math
import operator
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

from heredity.errors import HeredityError, describe_validation

Row = dict[str, Any]
Groups = Mapping[str, Sequence[Row]]
Direction = Literal["max", "min"]
Op = Literal[">=", ">", "<=", "<"]

# Row fields that are not metrics (used to list the scored metrics in error messages).
BASE_FIELDS = ("prompt_id", "prompt", "teacher", "sample_index", "text", "finish_reason")

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
}


class SpecError(HeredityError, ValueError):
    """A bad strategy spec. A ValueError too, so pydantic validators report it under the field."""


# --------------------------------------------------------------------------------------------
# Tie order and metric values


class Context:
    """What every strategy needs besides the pool: the order that breaks ties."""

    def __init__(self, teacher_order: Iterable[str] = ()):
        self.teacher_order = tuple(teacher_order)
        self._rank: dict[str, int] = {}
        for teacher in self.teacher_order:
            self._rank.setdefault(teacher, len(self._rank))

    def order_key(self, row: Row) -> tuple:
        """Earlier teachers first, then lower sample indices."""
        teacher = row["teacher"]
        return (self._rank.get(teacher, len(self._rank)), str(teacher), row["sample_index"])

    def ordered(self, rows: Iterable[Row]) -> list[Row]:
        return sorted(rows, key=self.order_key)

    def pick(self, rows: Sequence[Row], score: Callable[[Row], float]) -> Row:
        """The row with the highest score; among equal scores, the first in tie order."""
        return min(rows, key=lambda r: (-score(r), self.order_key(r)))


def value(row: Row, metric: str) -> float:
    """A row's metric as a float; NaN when missing (None in Parquet nulls)."""
    v = row.get(metric)
    return math.nan if v is None else float(v)


def oriented(row: Row, metric: str, direction: Direction) -> float:
    """The metric turned so that larger is better; a missing value is worse than any real one."""
    v = value(row, metric)
    if math.isnan(v):
        return -math.inf
    return v if direction == "max" else -v


def passes(row: Row, metric: str, op: str, threshold: float) -> bool:
    v = value(row, metric)
    return not math.isnan(v) and _OPS[op](v, threshold)


def group_by_prompt(rows: Iterable[Row]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[row["prompt_id"]].append(row)
    return dict(groups)


def _prompts(groups: Groups) -> Iterator[tuple[str, Sequence[Row]]]:
    """Prompts in sorted id order, so outputs are stable whatever order the pool came in."""
    for pid in sorted(groups):
        if groups[pid]:
            yield pid, groups[pid]


# --------------------------------------------------------------------------------------------
# Registry


class Params(BaseModel):
    """Parameters of one strategy. Unknown keys are errors, as everywhere in a config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def metrics(self) -> set[str]:
        """Metrics the strategy reads, so callers can check they were scored."""
        return set()


StrategyFn = Callable[[Groups, Any, Context], list[Row]]


@dataclass(frozen=True)
class Strategy:
    name: str
    fn: StrategyFn
    params: type[Params]
    description: str
    passive: bool  # True: a baseline that does not look at metrics

    def parse(self, params: Mapping[str, Any]) -> Spec:
        try:
            return Spec(self, self.params.model_validate(dict(params)))
        except ValidationError as exc:
            raise SpecError(f"strategy '{self.name}': {describe_validation(exc, self.params, 'parameter')}") from None

    def __call__(self, groups: Groups, teacher_order: Iterable[str] = (), **params: Any) -> list[Row]:
        return select(groups, self.parse(params), teacher_order)


@dataclass(frozen=True)
class Spec:
    """A strategy with validated parameters."""

    strategy: Strategy
    params: Params

    def metrics(self) -> set[str]:
        return self.params.metrics()

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy.name, **self.params.model_dump(mode="json")}

    def run(self, groups: Groups, ctx: Context) -> list[Row]:
        return self.strategy.fn(groups, self.params, ctx)


STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str, params: type[Params] = Params, *, passive: bool = False,
                      description: str = "") -> Callable[[StrategyFn], StrategyFn]:
    """Decorator: add ``fn(groups, params, ctx) -> rows`` to ``STRATEGIES`` under ``name``."""

    def decorate(fn: StrategyFn) -> StrategyFn:
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
        STRATEGIES[name] = Strategy(name, fn, params, doc, passive)
        return fn

    return decorate


class FreeParams(Params):
    """Parameters of a ``module:function`` strategy that declares no parameter model: passed
    through as given (as attributes). Any ``metric`` / ``metrics`` parameter is checked as scored."""

    model_config = ConfigDict(extra="allow", frozen=True)

    def metrics(self) -> set[str]:
        extra = self.model_extra or {}
        found = {extra["metric"]} if isinstance(extra.get("metric"), str) else set()
        listed = extra.get("metrics")
        if isinstance(listed, (list, tuple)):
            found |= {m for m in listed if isinstance(m, str)}
        return found


_PLUGIN_ERRORS: dict[str, str] = {}
_entry_points_loaded = False


def _load_entry_points() -> None:
    """Import every ``heredity.strategies`` plugin once: an entry point names a module (whose
    ``@register_strategy`` calls run on import) or a function (registered under the entry
    point's name). A broken plugin is reported when one of its names is asked for."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    from heredity.metrics.registry import _one_line

    for ep in entry_points(group="heredity.strategies"):
        try:
            obj = ep.load()
        except Exception as exc:
            _PLUGIN_ERRORS[ep.name] = f"strategy plugin '{ep.name}' ({ep.value}) failed to load: {_one_line(exc)}"
            continue
        if (callable(obj) and not isinstance(obj, type) and ep.name not in STRATEGIES
                and not any(s.fn is obj for s in STRATEGIES.values())):
            STRATEGIES[ep.name] = _strategy_from_function(ep.name, obj)


def _strategy_from_function(name: str, fn: Callable[..., list[Row]]) -> Strategy:
    """An unregistered ``fn(groups, params, ctx)``; ``fn.params`` (a Params subclass) and
    ``fn.passive`` are used when present."""
    params = getattr(fn, "params", None)
    if not (isinstance(params, type) and issubclass(params, Params)):
        params = FreeParams
    doc = (fn.__doc__ or "").strip().split("\n")[0]
    return Strategy(name, fn, params, doc, bool(getattr(fn, "passive", False)))


def get_strategy(name: str) -> Strategy:
    """A registered strategy (built in or from a plugin), or ``module:function`` imported."""
    if name in STRATEGIES:
        return STRATEGIES[name]
    _load_entry_points()
    if name in STRATEGIES:
        return STRATEGIES[name]
    if name in _PLUGIN_ERRORS:
        raise SpecError(_PLUGIN_ERRORS[name])
    if ":" in name:
        from heredity.metrics.registry import import_object

        try:
            fn = import_object(name, "strategy")
        except HeredityError as exc:
            raise SpecError(str(exc)) from None
        if name not in STRATEGIES:
            registered = next((s for s in STRATEGIES.values() if s.fn is fn), None)
            STRATEGIES[name] = registered or _strategy_from_function(name, fn)
        return STRATEGIES[name]
    raise SpecError(
        f"unknown selection strategy '{name}'; known: {', '.join(sorted(STRATEGIES))} (or 'module:function')"
    )


def list_strategies() -> list[Strategy]:
    _load_entry_points()
    return [STRATEGIES[k] for k in sorted(STRATEGIES)]


def parse_spec(spec: str | Mapping[str, Any] | Spec) -> Spec:
    """``"first"`` or ``{"strategy": "best", "metric": ..., ...}`` → a validated Spec."""
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, str):
        return get_strategy(spec).parse({})
    if not isinstance(spec, Mapping):
        raise SpecError(f"a strategy spec is a name or a mapping with 'strategy', not {type(spec).__name__}")
    params = dict(spec)
    name = params.pop("strategy", None)
    if not isinstance(name, str):
        raise SpecError(f"a strategy spec needs 'strategy: NAME'; got keys {sorted(spec)}")
    return get_strategy(name).parse(params)


def spec_metrics(spec: str | Mapping[str, Any] | Spec) -> list[str]:
    """Every metric a spec reads, nested specs included (for adding them to score.metrics)."""
    return sorted(parse_spec(spec).metrics())


def select(groups: Groups, spec: str | Mapping[str, Any] | Spec,
           teacher_order: Iterable[str] = ()) -> list[Row]:
    """Run one strategy on a grouped pool; returns at most one row per prompt, sorted by prompt id."""
    parsed = parse_spec(spec)
    _check_scored(groups, parsed)
    chosen = parsed.run(groups, Context(teacher_order))
    # Guards user-registered strategies: training on two answers to one prompt, or on a row
    # from outside the pool, would silently change what the arm means.
    seen: set[str] = set()
    for row in chosen:
        pid = row["prompt_id"]
        if pid in seen or pid not in groups:
            problem = "twice" if pid in seen else "although it is not in the pool"
            raise HeredityError(f"strategy '{parsed.strategy.name}' returned prompt '{pid}' {problem}")
        seen.add(pid)
    return chosen


def _check_scored(groups: Groups, spec: Spec) -> None:
    sample = next((rows[0] for _, rows in _prompts(groups)), None)
    if sample is None:
        return
    missing = sorted(m for m in spec.metrics() if m not in sample)
    if missing:
        scored = ", ".join(k for k in sample if k not in BASE_FIELDS) or "none"
        raise HeredityError(
            f"strategy '{spec.strategy.name}' reads {', '.join(repr(m) for m in missing)}, "
            f"which was not scored (scored: {scored}); add it to score.metrics"
        )


# --------------------------------------------------------------------------------------------
# Passive baselines


class RandomParams(Params):
    seed: int = 0


@register_strategy("random", RandomParams, passive=True)
def select_random(groups: Groups, params: RandomParams, ctx: Context) -> list[Row]:
    """One candidate per prompt, uniformly at random (seeded)."""
    chosen = []
    for pid, rows in _prompts(groups):
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
    return [min(rows, key=ctx.order_key) for _, rows in _prompts(groups)]


class TeacherParams(Params):
    name: str = Field(..., description="Teacher label as it appears in the pool.")


@register_strategy("teacher", TeacherParams, passive=True)
def select_teacher(groups: Groups, params: TeacherParams, ctx: Context) -> list[Row]:
    """Every answer from one named teacher (its lowest sample index); prompts it lacks are dropped."""
    chosen = []
    for _, rows in _prompts(groups):
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
    return [ctx.pick(rows, lambda r: oriented(r, params.metric, params.direction)) for _, rows in _prompts(groups)]


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

    return [ctx.pick(rows, score) for _, rows in _prompts(groups)]


class Condition(Params):
    """``metric op value``, e.g. ``toxicity <= 0.1``."""

    metric: str
    op: Op
    value: float

    def holds(self, row: Row) -> bool:
        return passes(row, self.metric, self.op, self.value)


class ThresholdParams(Params):
    metric: str
    op: Op
    value: float
    then: Any = Field(..., description="The rule that picks among the kept prompts' candidates.")
    among: Literal["all", "passing"] = Field(
        "all", description="'all': the rule sees every candidate of a kept prompt; 'passing': only those that pass."
    )

    @field_validator("then")
    @classmethod
    def _parse_then(cls, v: Any) -> Spec:
        return parse_spec(v)

    @field_serializer("then")
    def _dump_then(self, then: Spec) -> dict[str, Any]:
        return then.to_dict()

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
    for pid, rows in _prompts(groups):
        passing = [r for r in rows if passes(r, params.metric, params.op, params.value)]
        if passing:
            kept[pid] = rows if params.among == "all" else passing
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
    for _, rows in _prompts(groups):
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
    pool = [r for _, rows in _prompts(groups) for r in rows]
    stats = zscore_stats(pool, params.weights)
    score = {id(r): s for r, s in zip(pool, weighted_scores(pool, params.weights, stats))}
    return [ctx.pick(rows, lambda r: score[id(r)]) for _, rows in _prompts(groups)]


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
    for _, rows in _prompts(groups):
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


# --------------------------------------------------------------------------------------------
# Steering strength


def sweep(groups: Groups, rule: str | Mapping[str, Any] | Spec, teacher_order: Iterable[str] = (),
          unit: Literal["sample", "candidate"] = "sample", ks: Iterable[int] | None = None) -> dict[int, list[Row]]:
    """Dose-response: the rule applied to the first k' candidates of each prompt, k' = 1..k.

    ``unit="sample"``: step k' keeps the candidates with ``sample_index < k'`` from *every*
    teacher; k is the largest sample index + 1. At k' = 1 the rule sees each teacher's first
    sample, so with one teacher it equals ``first`` (no steering) and with several teachers it
    already chooses between teachers. At k' = k it equals the rule on the whole pool.

    ``unit="candidate"``: candidates are ordered by (sample_index, teacher order) and step k'
    keeps the first k' of each prompt; k is the largest group size. At k' = 1 this equals
    ``first`` whenever the first teacher answered the prompt with sample_index 0 (as the
    generate stage always does); k' = j·T (T teachers, all present) equals unit="sample" at j.
    Use it for pools with one sample per teacher, e.g. replayed outputs.

    With ``best`` (max) the target's per-prompt value — hence its mean — never decreases in k'
    because every step's candidates contain the previous step's.
    """
    spec = parse_spec(rule)
    ctx = Context(teacher_order)
    if unit not in ("sample", "candidate"):
        raise HeredityError(f"sweep unit must be 'sample' or 'candidate', not '{unit}'")
    # Candidate order: every teacher's sample 0, then every teacher's sample 1, ...
    interleaved = {pid: sorted(rows, key=lambda r: (r["sample_index"], ctx.order_key(r)))
                   for pid, rows in _prompts(groups)}
    if unit == "sample":
        k = max((r["sample_index"] for rows in interleaved.values() for r in rows), default=-1) + 1
    else:
        k = max((len(rows) for rows in interleaved.values()), default=0)
    steps = list(ks) if ks is not None else list(range(1, k + 1))
    result = {}
    for step in steps:
        if step < 1:
            raise HeredityError(f"sweep steps start at 1, got {step}")
        if unit == "sample":
            truncated = {pid: [r for r in rows if r["sample_index"] < step] for pid, rows in interleaved.items()}
        else:
            truncated = {pid: rows[:step] for pid, rows in interleaved.items()}
        result[step] = select(truncated, spec, ctx.teacher_order)
    return result


def dose_response(steps: Mapping[int, Sequence[Row]], metrics: Iterable[str]) -> dict[int, dict[str, Any]]:
    """Per sweep step: prompts kept and the mean of each metric (NaN ignored; None if no value)."""
    metrics = list(metrics)
    return {k: {"prompts": len(rows), **{m: _stats([value(r, m) for r in rows])["mean"] for m in metrics}}
            for k, rows in steps.items()}


# --------------------------------------------------------------------------------------------
# Data card


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    arr = np.array(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if not arr.size:
        return {"mean": None, "q25": None, "median": None, "q75": None}
    # Linear interpolation between order statistics: numpy's and pandas' default, so the card
    # agrees with what a user computes from the Parquet file.
    q25, median, q75 = np.quantile(arr, [0.25, 0.5, 0.75])
    return {"mean": float(arr.mean()), "q25": float(q25), "median": float(median), "q75": float(q75)}


def data_card(pool: Sequence[Row], selections: Mapping[str, Sequence[Row]], metrics: Iterable[str]) -> dict[str, Any]:
    """What each selection changed relative to the pool.

    Per metric: pool vs selection mean and quartiles and the mean's shift in % of the pool
    mean; per selection: prompts dropped by filters, each teacher's share of the winners and
    the share of winners cut at the token cap (finish_reason "length"). Missing metric values
    are left out of the statistics; shares of an empty selection are None.
    """
    prompts = {r["prompt_id"] for r in pool}
    teachers = sorted({str(r["teacher"]) for r in pool})
    card: dict[str, Any] = {"pool_size": len(pool), "prompts": len(prompts), "metrics": {}}
    for metric in metrics:
        pool_stats = _stats([value(r, metric) for r in pool])
        entry: dict[str, Any] = {"pool": pool_stats}
        base = pool_stats["mean"]
        for arm, rows in selections.items():
            stats: dict[str, Any] = _stats([value(r, metric) for r in rows])
            stats["shift_pct"] = (100.0 * (stats["mean"] - base) / abs(base)
                                  if base and stats["mean"] is not None else None)
            entry[arm] = stats
        card["metrics"][metric] = entry

    def share(rows: Sequence[Row], hit: Callable[[Row], bool]) -> float | None:
        return sum(map(hit, rows)) / len(rows) if rows else None

    card["teacher_share"] = {
        arm: {t: share(rows, lambda r, t=t: str(r["teacher"]) == t) for t in teachers}
        for arm, rows in selections.items()
    }
    card["truncated_share"] = {arm: share(rows, lambda r: r["finish_reason"] == "length")
                               for arm, rows in selections.items()}
    card["dropped_prompts"] = {arm: len(prompts - {r["prompt_id"] for r in rows})
                               for arm, rows in selections.items()}
    return card


# --------------------------------------------------------------------------------------------
# Export for SFT

ChatFormat = Literal["messages", "prompt-completion"]
_METADATA = (("prompt_id", "string"), ("teacher", "string"), ("sample_index", "int64"))


def to_chat_rows(rows: Sequence[Row], system_prompt: str | None = None, fmt: ChatFormat = "messages",
                 metadata: bool = False) -> list[dict[str, Any]]:
    """Selected rows as conversations that TRL's SFTTrainer reads directly.

    ``messages``: ``{"messages": [system?, user, assistant]}`` (language modelling; the loss
    covers the whole conversation unless ``assistant_only_loss`` is set).
    ``prompt-completion``: ``{"prompt": [system?, user], "completion": [assistant]}``; TRL
    then computes the loss on the completion only — what heredity's train stage uses.
    ``system_prompt``: None sends no system message (the chat template may add its default),
    "" or text sends one — the same convention as generation and training.
    ``metadata`` adds prompt_id, teacher and sample_index so each example traces back to its
    candidate (SFTTrainer drops columns it does not use).
    """
    from heredity.core.models import chat_messages

    if fmt not in ("messages", "prompt-completion"):
        raise HeredityError(f"chat format must be 'messages' or 'prompt-completion', not '{fmt}'")
    out = []
    for row in rows:
        prompt = chat_messages(row["prompt"], system_prompt)
        answer = {"role": "assistant", "content": row["text"]}
        item: dict[str, Any] = ({"messages": [*prompt, answer]} if fmt == "messages"
                                else {"prompt": prompt, "completion": [answer]})
        if metadata:
            item.update({name: row[name] for name, _ in _METADATA})
        out.append(item)
    return out


def _chat_schema(fmt: ChatFormat, metadata: bool):
    # An explicit schema keeps the columns (and their types) even for an empty selection.
    import pyarrow as pa

    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    columns = [("messages", messages)] if fmt == "messages" else [("prompt", messages), ("completion", messages)]
    if metadata:
        columns += [(name, pa.string() if kind == "string" else pa.int64()) for name, kind in _METADATA]
    return pa.schema(columns)


def export_selection(rows: Sequence[Row], path: str | Path, system_prompt: str | None = None,
                     fmt: ChatFormat = "messages", metadata: bool = False) -> Path:
    """Write the selection as chat rows to ``.jsonl`` (one JSON object a line) or ``.parquet``."""
    from heredity.core.rundir import atomic_path

    path = Path(path)
    chat = to_chat_rows(rows, system_prompt, fmt, metadata)
    if path.suffix == ".jsonl":
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in chat)
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        with atomic_path(path) as tmp:
            pq.write_table(pa.Table.from_pylist(chat, schema=_chat_schema(fmt, metadata)), tmp)
    else:
        raise HeredityError(f"{path}: export writes .jsonl or .parquet, not '{path.suffix or 'no suffix'}'")
    return path


def to_sft_dataset(rows: Sequence[Row], system_prompt: str | None = None, fmt: ChatFormat = "messages",
                   metadata: bool = False):
    """The selection as a ``datasets.Dataset`` to pass as ``SFTTrainer(train_dataset=...)``."""
    from datasets import Dataset, Features  # imported here: datasets is slow to import

    chat = to_chat_rows(rows, system_prompt, fmt, metadata)
    schema = _chat_schema(fmt, metadata)
    return Dataset.from_dict({name: [item[name] for item in chat] for name in schema.names},
                             features=Features.from_arrow_schema(schema))
