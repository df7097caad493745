"""Select stage: one training set per arm from the same scored pool.

- passive: one candidate per prompt, uniformly at random (seeded) — what a student inherits
  when nobody steers;
- active: the candidate that maximises (or minimises) the target metric — steering.

Ties break deterministically by teacher order, then sample index.
"""

from __future__ import annotations

import random
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from heredity.config import RunConfig
from heredity.errors import HeredityError
from heredity.rundir import Stage, read_table, stable_hash, write_json, write_table

ARMS = ("passive", "active")


def group_by_prompt(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row["prompt_id"]].append(row)
    return groups


def select_random(groups: dict[str, list[dict[str, Any]]], seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [rng.choice(groups[pid]) for pid in sorted(groups)]


def select_best(groups: dict[str, list[dict[str, Any]]], metric: str, direction: str,
                teacher_order: list[str]) -> list[dict[str, Any]]:
    sign = 1.0 if direction == "max" else -1.0
    rank = {t: i for i, t in enumerate(teacher_order)}
    chosen = []
    for pid in sorted(groups):
        candidates = groups[pid]
        # max() keeps the first of equal keys; the secondary keys make "first" well defined.
        best = max(candidates, key=lambda r: (sign * r[metric], -rank.get(r["teacher"], 0), -r["sample_index"]))
        chosen.append(best)
    return chosen


def data_card(pool: list[dict[str, Any]], selections: dict[str, list[dict[str, Any]]],
              metrics: list[str]) -> dict[str, Any]:
    """Per metric: pool vs selection mean and quartiles, shift in %, and teacher shares."""

    def describe(values: list[float]) -> dict[str, float]:
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        return {"mean": statistics.fmean(values), "q25": q[0], "median": q[1], "q75": q[2]}

    card: dict[str, Any] = {"pool_size": len(pool), "prompts": len({r["prompt_id"] for r in pool}), "metrics": {}}
    for metric in metrics:
        pool_stats = describe([r[metric] for r in pool])
        entry: dict[str, Any] = {"pool": pool_stats}
        for arm, rows in selections.items():
            stats = describe([r[metric] for r in rows])
            base = pool_stats["mean"]
            stats["shift_pct"] = 100.0 * (stats["mean"] - base) / abs(base) if base else None
            entry[arm] = stats
        card["metrics"][metric] = entry
    card["teacher_share"] = {
        arm: {t: sum(r["teacher"] == t for r in rows) / len(rows) for t in sorted({r["teacher"] for r in pool})}
        for arm, rows in selections.items()
    }
    card["truncated_share"] = {
        arm: sum(r["finish_reason"] == "length" for r in rows) / len(rows) for arm, rows in selections.items()
    }
    return card


def run_select(cfg: RunConfig, run_dir: Path, score: Stage) -> Stage:
    stage = Stage(run_dir, "select", {"scores": score.key, "select": cfg.select.model_dump()})
    if stage.reuse():
        return stage
    stage.start()
    pool = read_table(score.dir / "scores.parquet")
    metric = cfg.select.metric
    if pool and metric not in pool[0]:
        raise HeredityError(f"select.metric '{metric}' was not scored; add it to score.metrics")
    groups = group_by_prompt(pool)
    selections = {
        "passive": select_random(groups, cfg.select.seed),
        "active": select_best(groups, metric, cfg.select.direction, [t.label for t in cfg.teachers]),
    }
    outputs = {}
    data_hashes = {}
    for arm, rows in selections.items():
        write_table(stage.dir / f"{arm}.parquet", rows)
        outputs[arm] = f"{arm}.parquet"
        data_hashes[arm] = stable_hash([(r["prompt"], r["text"]) for r in rows])
    card = data_card(pool, selections, cfg.score.metrics)
    card["target"] = {"metric": metric, "direction": cfg.select.direction}
    write_json(stage.dir / "card.json", card)
    stage.finish({**outputs, "card": "card.json"}, data_hashes=data_hashes)
    return stage
