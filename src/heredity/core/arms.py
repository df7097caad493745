"""The arms of a run and which of them are compared: the one home of these rules.

Arms: ``base`` (the untrained student), ``passive`` (the baseline selection), ``active`` (the
steered selection) and the ``select.variants`` (more steered arms), in that order. The trained
arms themselves come from the config (``SelectConfig.arms()``: passive, active, variants).

Comparisons, always ``(a, b)`` read as "a against b":

* ``comparisons``: the report's paired differences (held-out metrics and the profile): active
  vs passive, active vs base, passive vs base, then each variant vs passive, base and active;
* ``judged_comparisons``: the LLM judge's pairings (``eval.judge``), fewer because each costs a
  judge model's pass over both arms' answers: active vs passive, active vs base, then each
  variant vs passive.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from heredity.config import ACTIVE, ARM_ORDER, BASE, PASSIVE

__all__ = ["ACTIVE", "ARM_ORDER", "BASE", "PASSIVE", "comparisons", "judged_comparisons", "ordered_arms",
           "steered_arms"]
COMPARISONS = ((ACTIVE, PASSIVE), (ACTIVE, BASE), (PASSIVE, BASE))
JUDGED_COMPARISONS = ((ACTIVE, PASSIVE), (ACTIVE, BASE))


def comparisons(variants: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The paired comparisons of a run: the built-in three, then each variant against the
    passive baseline, the base student and the active arm."""
    return [*COMPARISONS, *((v, other) for v in variants for other in (PASSIVE, BASE, ACTIVE))]


def judged_comparisons(variants: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The judge's comparisons: JUDGED_COMPARISONS, then each variant against the passive baseline."""
    return [*JUDGED_COMPARISONS, *((v, PASSIVE) for v in variants)]


def ordered_arms(names: Iterable[str]) -> list[str]:
    """base, passive, active, then the variants in the order given."""
    names = list(names)
    return [a for a in ARM_ORDER if a in names] + [a for a in names if a not in ARM_ORDER]


def steered_arms(card: dict[str, Any]) -> list[str]:
    """The arms of a selection data card other than the passive baseline: active, then variants."""
    return [a for a in ordered_arms(card["teacher_share"]) if a != PASSIVE]


def decoding_label(summary: dict[str, Any]) -> str:
    """How the held-out answers were decoded, as a report states it ("greedy answers" for summaries
    written before evaluation could sample)."""
    ev = (summary.get("config") or {}).get("eval") or {}
    temperature = ev.get("temperature") or 0.0
    penalty = ev.get("repetition_penalty") or 1.0
    penalised = f"repetition penalty {penalty:g} on the answer's own tokens" if penalty != 1.0 else ""
    if not temperature:
        return f"greedy answers ({penalised})" if penalised else "greedy answers"
    return (f"one sampled answer each (temperature {temperature:g}, top-p {ev.get('top_p', 1.0):g}, "
            f"{penalised + ', ' if penalised else ''}seeded per prompt)")


def target_of(summary: dict[str, Any], arm: str) -> tuple[str, str]:
    """(metric, direction) an arm steers towards: the run's target, or a variant's own rule."""
    target = summary["target"]
    variant = ((summary.get("config") or {}).get("select") or {}).get("variants", {}).get(arm)
    if isinstance(variant, dict) and variant.get("metric"):
        return variant["metric"], variant.get("direction") or target["direction"]
    return target["metric"], target["direction"]
