"""The arms of a run and which of them are compared: the one home of these rules.

Arms: ``base`` (the untrained student), ``passive`` (the baseline selection), ``active`` (the
steered selection), the ``select.variants`` (more steered arms) and the ``select.preference`` arms
(trained on preference pairs), in that order. The trained arms themselves come from the config
(``SelectConfig.arms()``; ``extra_arms()`` are the variants and preference arms, compared like a
variant).

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

__all__ = ["ACTIVE", "ARM_ORDER", "BASE", "PASSIVE", "comparisons", "dose_response", "judged_comparisons",
           "mark_families", "mark_profile_family", "objective_label", "ordered_arms", "primary_comparisons", "selection_strength", "steered_arms",
           "teacher_sources"]
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
    select = (summary.get("config") or {}).get("select") or {}
    rule = (select.get("variants") or {}).get(arm) or (select.get("preference") or {}).get(arm)
    if isinstance(rule, dict) and rule.get("metric"):
        return rule["metric"], rule.get("direction") or target["direction"]
    return target["metric"], target["direction"]


def selection_strength(summary: dict[str, Any], arm: str) -> float | None:
    """k': how many candidates per prompt the arm's rule chose among, towards the run's target.

    A random pick is k' = 1 (no steering); ``best`` on the target, all candidates of the prompt;
    ``first_k`` then ``best`` on the target, its first k samples of every teacher (``unit:
    sample``) or its first k candidates (``unit: candidate``). Any other rule (a teacher, a
    threshold, another metric) has no strength on the target: None.
    """
    card = summary.get("selection") or {}
    rule = (card.get("rules") or {}).get(arm)
    if not isinstance(rule, dict) or not card.get("prompts"):
        return None
    target = summary["target"]
    per_prompt = card["pool_size"] / card["prompts"]

    def steers_target(r: Any) -> bool:
        return (isinstance(r, dict) and r.get("strategy") == "best"
                and (r.get("metric") or target["metric"]) == target["metric"]
                and (r.get("direction") or target["direction"]) == target["direction"])

    if rule.get("strategy") == "random":
        return 1.0
    if steers_target(rule):
        return per_prompt
    if rule.get("strategy") == "first_k" and steers_target(rule.get("then")) and rule.get("k"):
        teachers = len((summary.get("config") or {}).get("teachers") or []) or 1
        per_unit = teachers if rule.get("unit", "sample") == "sample" else 1
        return float(min(rule["k"] * per_unit, per_prompt))
    return None


def dose_response(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The student-level dose-response of a run: for each trained arm with a selection
    strength k' on the target, in k' order, the mean of its kept data, the student's held-out
    mean with its CI, and its paired differences against passive and base. Empty unless at
    least three strengths differ (passive, active and one between): two points are the
    active-passive comparison the report already shows."""
    target = summary["target"]["metric"]
    kept = ((summary.get("selection") or {}).get("metrics") or {}).get(target) or {}
    points = []
    for arm in ordered_arms(summary.get("arms") or {}):
        k = None if arm == BASE else selection_strength(summary, arm)
        if k is None:
            continue
        diffs = summary.get("differences") or {}
        points.append({
            "arm": arm, "k": k, "kept_mean": (kept.get(arm) or {}).get("mean"),
            "mean": summary["arms"][arm].get(target), "ci95": (summary.get("ci95") or {}).get(arm, {}).get(target),
            "vs_passive": None if arm == PASSIVE else diffs.get(f"{arm}_vs_{PASSIVE}", {}).get(target),
            "vs_base": diffs.get(f"{arm}_vs_{BASE}", {}).get(target),
        })
    points.sort(key=lambda p: p["k"])
    return points if len({p["k"] for p in points}) >= 3 else []


def teacher_sources(summary: dict[str, Any]) -> dict[str, str]:
    """arm → teacher when every trained arm keeps one teacher's answers (a study of passive
    inheritance: no arm steers a metric, so no arm has a target to be judged on); else {}."""
    rules = (summary.get("selection") or {}).get("rules") or {}
    trained = [a for a in summary["arms"] if a != "base"]
    if not trained or any((rules.get(a) or {}).get("strategy") != "teacher" for a in trained):
        return {}
    return {a: str(rules[a].get("name")) for a in trained}


def primary_comparisons(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The run's primary comparisons as (comparison, metric): the config's ``primary`` when it names
    them, else each steered arm's own target against passive and against base. Every other paired
    difference is exploratory."""
    named = (summary.get("config") or {}).get("primary")
    if named:
        return [tuple(entry.split(":", 1)) for entry in named]
    differences = summary.get("differences") or {}
    out = []
    for comparison in differences:
        a, _, b = comparison.partition("_vs_")
        if a != PASSIVE and b in (PASSIVE, BASE):
            out.append((comparison, target_of(summary, a)[0]))
    return out


def mark_families(summary: dict[str, Any]) -> None:
    """Each held-out paired difference gets its ``family``: ``primary`` (the confirmatory result) or
    ``exploratory``, and ``q``, its Benjamini-Hochberg q-value within its family (``moved``: q < 0.05). The profile's differences are a
    family of their own (``mark_profile_family``)."""
    primary = set(primary_comparisons(summary))
    families: dict[str, list[dict[str, Any]]] = {"primary": [], "exploratory": []}
    for comparison, metrics in (summary.get("differences") or {}).items():
        for metric, d in metrics.items():
            d["family"] = "primary" if (comparison, metric) in primary else "exploratory"
            families[d["family"]].append(d)
    for family in families.values():  # several primary comparisons are a (small) family too
        _qvalues(family)
    if summary.get("profile"):
        mark_profile_family(summary["profile"])


def mark_profile_family(profile: dict[str, Any]) -> None:
    """The profile's paired differences between students, one exploratory family: each gets ``q``
    and ``moved`` as in ``mark_families``."""
    _qvalues([d for per_key in (profile.get("differences") or {}).values() for d in per_key.values()
              if isinstance(d, dict) and "ci95" in d])


def _qvalues(family: list[dict[str, Any]]) -> None:
    """BH q-values over ``family``. A difference without a bootstrap p-value (a summary written
    before they were recorded) gets one read off its CI (``p_from_ci``, ``p_source: ci``)."""
    from heredity.core.stats import bh_qvalues, p_from_ci

    for d in family:
        if d.get("p") is None and "p_source" not in d:
            d["p"] = p_from_ci(d.get("diff"), d.get("ci95"))
            d["p_source"] = "ci"
    for d, q in zip(family, bh_qvalues([d.get("p") for d in family])):
        d["q"] = q
        d["moved"] = q is not None and q < 0.05


def objective_label(result: dict[str, Any]) -> str:
    """An arm's training objective in words: "sft", or the preference losses with β and where it started."""
    objective = result.get("objective") or {}
    if objective.get("kind") != "preference":
        return "sft"
    weights = objective.get("loss_weights") or [1] * len(objective["loss"])
    losses = " + ".join(name if w == 1 else f"{w:g}·{name}" for name, w in zip(objective["loss"], weights))
    start = result.get("init") or "base"
    return f"preference ({losses}, β {objective['beta']:g}, from {start})"
