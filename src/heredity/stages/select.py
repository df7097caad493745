"""Select stage: one training set per arm from the same scored pool.

- passive: by default one candidate per prompt uniformly at random (seeded) — what a
  student inherits when nobody steers;
- active: by default the candidate that maximises (or minimises) the target metric;
- variants (``select.variants``): more steered arms, each with its own rule, e.g. the
  opposite direction or a constrained rule, trained and evaluated like ``active``.

Both rules are strategy specs (see ``heredity.strategies``): constrained, weighted, Pareto
and the other strategies plug in through ``select.active`` / ``select.passive``. Each arm's
set is written as Parquet (with scores) and as chat-format JSONL that TRL reads directly,
beside a data card.
"""

from __future__ import annotations

import json
from pathlib import Path

from heredity.config import RunConfig
from heredity.core.rundir import Stage, read_table, stable_hash, write_json, write_table
from heredity.errors import HeredityError
from heredity.strategies import (
    data_card,
    dose_response,
    export_selection,
    group_by_prompt,
    parse_spec,
    select,
    sweep,
)


def run_select(cfg: RunConfig, run_dir: Path, score: Stage) -> Stage:
    specs = {arm: parse_spec(spec) for arm, spec in cfg.select.specs().items()}
    stage = Stage(run_dir, "select", {
        "scores": score.key,
        "specs": {arm: spec.to_dict() for arm, spec in specs.items()},
        "target": [cfg.select.metric, cfg.select.direction],
        "sweep": cfg.select.sweep,
        "system_prompt": cfg.system_prompt,
    })
    if stage.reuse():
        return stage
    pool = read_table(score.dir / "scores.parquet")
    groups = group_by_prompt(pool)
    teacher_order = [t.label for t in cfg.teachers]
    selections = {arm: select(groups, spec, teacher_order) for arm, spec in specs.items()}
    for arm, rows in selections.items():
        if not rows:  # refused before anything is written: the stage stays unfinished
            raise HeredityError(f"select: arm '{arm}' selected no candidate from {len(groups)} prompts "
                                f"(rule {json.dumps(specs[arm].to_dict(), sort_keys=True, default=str)}); "
                                "loosen the rule or change the pool")
    stage.start()
    outputs, data_hashes = {}, {}
    for arm, rows in selections.items():
        write_table(stage.dir / f"{arm}.parquet", rows)
        export_selection(rows, stage.dir / f"{arm}.jsonl", system_prompt=cfg.system_prompt)
        outputs[arm] = f"{arm}.parquet"
        outputs[f"{arm}_chat"] = f"{arm}.jsonl"
        data_hashes[arm] = stable_hash([(r["prompt"], r["text"]) for r in rows])
    card = data_card(pool, selections, cfg.score.metrics)
    card["target"] = {"metric": cfg.select.metric, "direction": cfg.select.direction}
    card["rules"] = {arm: spec.to_dict() for arm, spec in specs.items()}
    if cfg.select.sweep != "off":
        steps = sweep(groups, specs["active"], teacher_order, unit=cfg.select.sweep)
        card["sweep"] = {"unit": cfg.select.sweep, "steps": dose_response(steps, cfg.score.metrics)}
    write_json(stage.dir / "card.json", card)
    stage.finish({**outputs, "card": "card.json"}, data_hashes=data_hashes)
    return stage
