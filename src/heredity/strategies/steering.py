"""Steering strength: a rule on the first k' candidates per prompt, and its dose-response."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from heredity.errors import HeredityError
from heredity.strategies.base import (
    Context,
    Groups,
    NestedRuleParams,
    Row,
    Spec,
    parse_spec,
    prompts,
    register_strategy,
    select,
    value,
)
from heredity.strategies.card import quartiles

Unit = Literal["sample", "candidate"]


def interleave(groups: Groups, ctx: Context) -> dict[str, list[Row]]:
    """Each prompt's candidates in steering order: every teacher's sample 0, then every
    teacher's sample 1, ... (teachers in tie order)."""
    return {pid: sorted(rows, key=lambda r: (r["sample_index"], ctx.order_key(r))) for pid, rows in prompts(groups)}


def first_candidates(interleaved: Mapping[str, Sequence[Row]], k: int, unit: Unit) -> dict[str, list[Row]]:
    """The first k samples of every teacher (``sample``) or the first k candidates (``candidate``)."""
    if unit == "sample":
        return {pid: [r for r in rows if r["sample_index"] < k] for pid, rows in interleaved.items()}
    return {pid: list(rows[:k]) for pid, rows in interleaved.items()}


class FirstKParams(NestedRuleParams):
    k: int = Field(..., ge=1, description="How many samples per teacher (or candidates) the rule may see.")
    unit: Unit = Field("sample", description="sample: the first k samples of every teacher; candidate: the "
                       "first k candidates in steering order (one sample per teacher, e.g. replayed outputs).")


@register_strategy("first_k", FirstKParams)
def select_first_k(groups: Groups, params: FirstKParams, ctx: Context) -> list[Row]:
    """A rule applied to the first k samples (or candidates) of each prompt: one step of the
    sweep, as an arm of its own, so students can be trained at several steering strengths."""
    return params.then.run(first_candidates(interleave(groups, ctx), params.k, params.unit), ctx)


def sweep(groups: Groups, rule: str | Mapping[str, Any] | Spec, teacher_order: Iterable[str] = (),
          unit: Unit = "sample", ks: Iterable[int] | None = None) -> dict[int, list[Row]]:
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
    interleaved = interleave(groups, ctx)
    if unit == "sample":
        k = max((r["sample_index"] for rows in interleaved.values() for r in rows), default=-1) + 1
    else:
        k = max((len(rows) for rows in interleaved.values()), default=0)
    steps = list(ks) if ks is not None else list(range(1, k + 1))
    result = {}
    for step in steps:
        if step < 1:
            raise HeredityError(f"sweep steps start at 1, got {step}")
        result[step] = select(first_candidates(interleaved, step, unit), spec, ctx.teacher_order)
    return result


def dose_response(steps: Mapping[int, Sequence[Row]], metrics: Iterable[str]) -> dict[int, dict[str, Any]]:
    """Per sweep step: prompts kept and the mean of each metric (NaN ignored; None if no value)."""
    metrics = list(metrics)
    return {k: {"prompts": len(rows), **{m: quartiles([value(r, m) for r in rows])["mean"] for m in metrics}}
            for k, rows in steps.items()}
