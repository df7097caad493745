"""Steering strength: a rule on the first k' candidates per prompt, and its dose-response."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from heredity.errors import HeredityError
from heredity.strategies.base import (
    Context,
    Groups,
    Row,
    Spec,
    parse_spec,
    prompts,
    select,
    value,
)
from heredity.strategies.card import quartiles


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
                   for pid, rows in prompts(groups)}
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
    return {k: {"prompts": len(rows), **{m: quartiles([value(r, m) for r in rows])["mean"] for m in metrics}}
            for k, rows in steps.items()}
