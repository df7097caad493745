"""Preference pairs from the same candidates active inheritance filters: per prompt, the rule's pick
(chosen) against another candidate of the same prompt (rejected).

``rejected: worst`` takes the candidate worst on the pair's metric, ``random`` a seeded random other
candidate. A pair is kept only when chosen beats rejected on the metric by more than ``min_margin``
(with 0, ties are dropped): a pair the metric cannot order teaches the preference nothing. Every prompt
that yields no pair is counted under its reason, so the data card says what was lost and why.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from heredity.strategies.base import Context, Groups, Row, oriented, prompts, select, value

# Why a prompt gave no pair, in the order they are checked.
DROP_REASONS = ("no_chosen", "chosen_undefined", "no_other_candidate", "tie", "below_margin")


def text_id(row: Row) -> Any:
    """What tells two candidates' texts apart: the text, or in a pool streamed without its texts the
    ``text_hash`` the select stage put in its place."""
    return row["text_hash"] if "text_hash" in row else row.get("text")


def build_pairs(groups: Groups, rule: Mapping[str, Any], teacher_order: Iterable[str] = ()
                ) -> tuple[list[tuple[Row, Row, float]], dict[str, int]]:
    """(chosen, rejected, margin) per kept prompt, in prompt id order, and the count of prompts dropped
    for each reason in ``DROP_REASONS``.

    ``rule`` is ``PreferenceArm.pair_rule``'s dict: metric, direction, chosen (a strategy spec),
    rejected (worst | random), min_margin, seed. The margin is on the metric turned so that larger
    is better: always positive in a kept pair. A candidate whose metric is undefined, or whose text
    is the chosen text, is never rejected: it would make a pair with no defined or no real margin.
    """
    ctx = Context(teacher_order)
    metric, direction = rule["metric"], rule["direction"]
    picked = {row["prompt_id"]: row for row in select(groups, rule["chosen"], ctx.teacher_order)}
    dropped = dict.fromkeys(DROP_REASONS, 0)
    pairs: list[tuple[Row, Row, float]] = []
    for pid, rows in prompts(groups):
        chosen = picked.get(pid)
        if chosen is None:
            dropped["no_chosen"] += 1
            continue
        if math.isnan(value(chosen, metric)):
            dropped["chosen_undefined"] += 1
            continue
        others = [r for r in rows if r is not chosen and not math.isnan(value(r, metric))
                  and text_id(r) != text_id(chosen)]
        if not others:
            dropped["no_other_candidate"] += 1
            continue
        if rule["rejected"] == "worst":
            rejected = ctx.pick(others, lambda r: -oriented(r, metric, direction))
        else:
            # one generator per prompt, as the random passive rule: a prompt's pick does not move when
            # other prompts are added or dropped
            rng = random.Random(f"{rule['seed']}:{pid}:rejected")
            rejected = rng.choice(sorted(others, key=lambda r: (str(r["teacher"]), r["sample_index"])))
        margin = oriented(chosen, metric, direction) - oriented(rejected, metric, direction)
        if margin == 0:
            dropped["tie"] += 1
        elif margin <= rule["min_margin"]:
            dropped["below_margin"] += 1
        else:
            pairs.append((chosen, rejected, margin))
    return pairs, dropped


def pairs_card(pairs: Sequence[tuple[Row, Row, float]], dropped: Mapping[str, int], rule: Mapping[str, Any],
               teachers: Sequence[str]) -> dict[str, Any]:
    """What a preference arm's data card says: pairs kept, prompts dropped by reason, the margin's
    distribution and each teacher's share of the chosen and of the rejected answers."""
    from heredity.strategies.card import quartiles

    margins = [m for _, _, m in pairs]

    def share(side: int) -> dict[str, float | None]:
        return {t: (sum(str(p[side]["teacher"]) == t for p in pairs) / len(pairs) if pairs else None)
                for t in teachers}

    stats = quartiles(margins)
    stats["min"] = float(np.min(margins)) if margins else None
    stats["max"] = float(np.max(margins)) if margins else None
    return {"rule": dict(rule), "pairs": len(pairs), "dropped": dict(dropped), "margin": stats,
            "chosen_teacher_share": share(0), "rejected_teacher_share": share(1)}
