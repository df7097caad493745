"""What every strategy builds on: rows, tie order, parameters, specs, the registry and ``select``."""

from __future__ import annotations

import math
import operator
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

from heredity.config import NoBoolNumbers
from heredity.core.registry import Registry
from heredity.errors import HeredityError, describe_validation

Row = dict[str, Any]
Groups = Mapping[str, Sequence[Row]]
Direction = Literal["max", "min"]
Op = Literal[">=", ">", "<=", "<"]

# Row fields that are not metrics (used to list the scored metrics in error messages).
BASE_FIELDS = ("prompt_id", "prompt", "teacher", "sample_index", "text", "finish_reason")

OPS: dict[str, Callable[[float, float], bool]] = {
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
    return not math.isnan(v) and OPS[op](v, threshold)


def group_by_prompt(rows: Iterable[Row]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[row["prompt_id"]].append(row)
    return dict(groups)


def prompts(groups: Groups) -> Iterator[tuple[str, Sequence[Row]]]:
    """Prompts in sorted id order, so outputs are stable whatever order the pool came in."""
    for pid in sorted(groups):
        if groups[pid]:
            yield pid, groups[pid]


# --------------------------------------------------------------------------------------------
# Registry


class Params(NoBoolNumbers):
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


def register_strategy(name: str, params: type[Params] = Params, *, passive: bool = False,
                      description: str = "") -> Callable[[StrategyFn], StrategyFn]:
    """Decorator: add ``fn(groups, params, ctx) -> rows`` to ``STRATEGIES`` under ``name``
    (a name already registered to another function is refused)."""

    def decorate(fn: StrategyFn) -> StrategyFn:
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
        STRATEGIES.add(name, Strategy(name, fn, params, doc, passive))
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


def strategy_from_function(name: str, fn: Callable[..., list[Row]], origin: str = "import") -> Strategy:
    """An unregistered ``fn(groups, params, ctx)``; ``fn.params`` (a Params subclass) and
    ``fn.passive`` are used when present. (``origin`` is where it came from; unused.)"""
    params = getattr(fn, "params", None)
    if not (isinstance(params, type) and issubclass(params, Params)):
        params = FreeParams
    doc = (fn.__doc__ or "").strip().split("\n")[0]
    return Strategy(name, fn, params, doc, bool(getattr(fn, "passive", False)))


# Built-in strategies, ``@register_strategy``ed ones, ``heredity.strategies`` entry points and
# imported ``module:function`` references, by name.
STRATEGIES: Registry[Strategy] = Registry(
    "strategy", noun="selection strategy", group="heredity.strategies", from_function=strategy_from_function,
    identity=lambda s: s.fn, alias_imports=True, error=SpecError)


def get_strategy(name: str) -> Strategy:
    """A registered strategy (built in or from a plugin), or ``module:function`` imported."""
    return STRATEGIES.get(name)


def list_strategies() -> list[Strategy]:
    return STRATEGIES.listed()


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



class NestedRuleParams(Params):
    """Parameters of a strategy that hands its candidates on to another rule, ``then``."""

    then: Any = Field(..., description="The rule applied to the candidates this strategy keeps.")

    @field_validator("then")
    @classmethod
    def _parse_then(cls, v: Any) -> "Spec":
        return parse_spec(v)

    @field_serializer("then")
    def _dump_then(self, then: "Spec") -> dict[str, Any]:
        return then.to_dict()

    def metrics(self) -> set[str]:
        return self.then.metrics()


def reads_scores_only(spec: str | Mapping[str, Any] | Spec) -> bool:
    """True when the rule and every rule nested in it are heredity's own, which read nothing of
    a row but ``prompt_id``, ``teacher``, ``sample_index``, ``finish_reason`` and metric values
    and return rows of the pool they were given: such rules can run on rows without the texts.
    A plugin may read anything (the text itself), so it gets whole rows."""
    parsed = parse_spec(spec)
    if not getattr(parsed.strategy.fn, "__module__", "").startswith("heredity.strategies."):
        return False
    then = getattr(parsed.params, "then", None)
    return then is None or reads_scores_only(then)


def spec_metrics(spec: str | Mapping[str, Any] | Spec) -> list[str]:
    """Every metric a spec reads, nested specs included (for adding them to score.metrics)."""
    return sorted(parse_spec(spec).metrics())


def select(groups: Groups, spec: str | Mapping[str, Any] | Spec,
           teacher_order: Iterable[str] = ()) -> list[Row]:
    """Run one strategy on a grouped pool; returns at most one row per prompt, sorted by prompt id."""
    parsed = parse_spec(spec)
    check_scored(groups, parsed)
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


def check_scored(groups: Groups, spec: Spec) -> None:
    sample = next((rows[0] for _, rows in prompts(groups)), None)
    if sample is None:
        return
    missing = sorted(m for m in spec.metrics() if m not in sample)
    if missing:
        scored = ", ".join(k for k in sample if k not in BASE_FIELDS) or "none"
        raise HeredityError(
            f"strategy '{spec.strategy.name}' reads {', '.join(repr(m) for m in missing)}, "
            f"which was not scored (scored: {scored}); add it to score.metrics"
        )
