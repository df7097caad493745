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

How it streams. A prompt's candidates may lie anywhere in ``scores.parquet`` (the generate
stage writes them teacher by teacher), and a rule needs all of them at once; some rules
(``weighted``) and the data card also need pool-wide statistics. So the stage reads the file
in batches keeping, per candidate, only what heredity's own rules read — prompt id, teacher,
sample index, finish reason and the metric values, not the prompt and answer texts — groups
those by prompt and runs every rule on them. It then reads the file once more, in batches,
taking just the chosen rows of every arm, and writes each arm's Parquet, chat export and data
hash from them. Time grows linearly with the pool (two reads, one pass of each rule); memory
grows with it too, but only by the per-candidate record (about half a KB, whatever the
answer's length), plus the chosen rows (at most one per prompt and arm: the output itself)
and one batch. (``benchmarks/scaling.py``: from 100k to 300k candidates, 8 per prompt, peak
RSS grew by about 2 KB per candidate in all, allocator overhead included.) A rule from a
plugin may read any field, the texts included, so when one is configured the stage holds
whole rows instead, as before the stage streamed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from heredity.config import RunConfig
from heredity.core.rundir import (
    ListHash,
    Stage,
    iter_parquet,
    parquet_schema,
    read_table,
    write_json,
    write_table,
)
from heredity.errors import HeredityError
from heredity.strategies import (
    Row,
    build_pairs,
    pairs_card,
    preference_schema,
    to_preference_rows,
    data_card,
    dose_response,
    export_batches,
    group_by_prompt,
    parse_spec,
    reads_scores_only,
    select,
    sweep,
)

# Left out of the rows the built-in rules see: nothing of heredity's reads them, and they
# are what makes a row large.
HEAVY_COLUMNS = ("prompt", "text", "candidate_key")
# Rows per chunk when an arm is written out as chat data.
EXPORT_ROWS = 2048
KEPT_MEMORY = pa.system_memory_pool()


def read_pool(path: Path, whole_rows: bool, text_hashes: bool = False) -> list[Row]:
    """The scored pool, one dict per candidate in file order; without the texts unless
    ``whole_rows``. Strings that repeat (prompt ids, teachers, finish reasons) are shared
    objects, so a prompt's id is stored once however many candidates it has. ``text_hashes``
    puts a hash of each text in its place (``text_hash``), so preference pairs can tell equal
    answers apart without holding them."""
    if whole_rows:
        return read_table(path)
    names = [n for n in parquet_schema(path).names if n not in HEAVY_COLUMNS]
    shared: dict[str, str] = {}
    pool: list[Row] = []
    for batch in iter_parquet(path, columns=names + ["text"] * text_hashes):
        columns = []
        for name in names:
            values = batch.column(name).to_pylist()
            if pa.types.is_string(batch.schema.field(name).type):
                values = [v if v is None else shared.setdefault(v, v) for v in values]
            columns.append(values)
        rows = [dict(zip(names, row)) for row in zip(*columns)]
        if text_hashes:
            for row, text in zip(rows, batch.column("text").to_pylist()):
                row["text_hash"] = hash(text)
        pool.extend(rows)
    return pool


def chosen_rows(path: Path, selections: dict[str, list[Row]], pool: list[Row]) -> Iterator[tuple[str, pa.Table]]:
    """Each arm's rows, whole, read back from the file in one pass (batch by batch).

    heredity's rules return rows of the pool itself, so a chosen row's place in the file is
    found by identity; rows chosen by several arms are read once."""
    position = {id(row): i for i, row in enumerate(pool)}
    arm_positions = {arm: np.array([position[id(row)] for row in rows], dtype=np.int64)
                     for arm, rows in selections.items()}
    del position
    wanted = np.unique(np.concatenate(list(arm_positions.values())))
    pieces, start = [], 0
    for batch in iter_parquet(path):
        end = start + batch.num_rows
        lo, hi = np.searchsorted(wanted, [start, end])
        if hi > lo:
            # kept rows go to another allocator than the batches they come from, so that the
            # reader's memory can be handed back after each row group instead of staying
            # pinned by the few rows kept from it
            pieces.append(pc.take(batch, pa.array(wanted[lo:hi] - start), memory_pool=KEPT_MEMORY))
        start = end
    fetched = pa.Table.from_batches(pieces, schema=parquet_schema(path))
    for arm, positions in arm_positions.items():
        yield arm, fetched.take(pa.array(np.searchsorted(wanted, positions)))


def write_arm(table: pa.Table, out: Path, arm: str, system_prompt: str | None) -> str:
    """``<arm>.parquet`` and ``<arm>.jsonl``; returns the arm's data hash (of its (prompt,
    text) pairs, which the train stage keys on), computed chunk by chunk."""
    write_table(out / f"{arm}.parquet", table)
    digest = ListHash()

    def chunks() -> Iterator[list[Row]]:
        for batch in table.to_batches(max_chunksize=EXPORT_ROWS):
            rows = batch.to_pylist()
            for row in rows:
                digest.update((row["prompt"], row["text"]))
            yield rows

    export_batches(chunks(), out / f"{arm}.jsonl", system_prompt=system_prompt)
    return digest.hexdigest()


def write_pairs(chosen: pa.Table, rejected: pa.Table, margins: list[float], out: Path, arm: str,
                metric: str, system_prompt: str | None) -> str:
    """``<arm>.pairs.parquet`` in the conversational preference schema (prompt, chosen, rejected);
    returns the arm's data hash, of its (prompt, chosen, rejected) texts."""
    pairs = list(zip(chosen.to_pylist(), rejected.to_pylist(), margins))
    write_table(out / f"{arm}.pairs.parquet",
                pa.Table.from_pylist(to_preference_rows(pairs, metric, system_prompt), schema=preference_schema()))
    digest = ListHash()
    for c, r, _ in pairs:
        digest.update((c["prompt"], c["text"], r["text"]))
    return digest.hexdigest()


def run_select(cfg: RunConfig, run_dir: Path, score: Stage) -> Stage:
    specs = {arm: parse_spec(spec) for arm, spec in cfg.select.specs().items()}
    pair_rules = {arm: pref.pair_rule(cfg.select.target, cfg.select.direction)
                  for arm, pref in cfg.select.preference.items()}
    key = {
        "scores": score.key,
        "specs": {arm: spec.to_dict() for arm, spec in specs.items()},
        "target": [cfg.select.target, cfg.select.direction],
        "sweep": cfg.select.sweep,
        "system_prompt": cfg.system_prompt,
    }
    if pair_rules:  # only then: runs without preference arms keep the key they always had
        key["pairs"] = {arm: {**rule, "chosen": parse_spec(rule["chosen"]).to_dict()}
                        for arm, rule in pair_rules.items()}
    stage = Stage(run_dir, "select", key)
    if stage.reuse():
        return stage
    path = score.dir / "scores.parquet"
    whole_rows = not all(reads_scores_only(spec) for spec in
                         [*specs.values(), *(rule["chosen"] for rule in pair_rules.values())])
    pool = read_pool(path, whole_rows, text_hashes=bool(pair_rules))
    groups = group_by_prompt(pool)
    teacher_order = [t.label for t in cfg.teachers]
    selections = {arm: select(groups, spec, teacher_order) for arm, spec in specs.items()}
    for arm, rows in selections.items():
        if not rows:  # refused before anything is written: the stage stays unfinished
            raise HeredityError(f"select: arm '{arm}' selected no candidate from {len(groups)} prompts "
                                f"(rule {json.dumps(specs[arm].to_dict(), sort_keys=True, default=str)}); "
                                "loosen the rule or change the pool")
    pairs = {arm: build_pairs(groups, rule, teacher_order) for arm, rule in pair_rules.items()}
    for arm, (kept, dropped) in pairs.items():
        if not kept:
            lost = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in dropped.items() if n)
            raise HeredityError(f"select: preference arm '{arm}' has no pair from {len(groups)} prompts ({lost}); "
                                "lower min_margin, use rejected: random, or generate more candidates per prompt")
    stage.start()
    # preference arms fetch their chosen and their rejected rows as two more selections
    fetch = {**selections, **{name: rows for arm, (kept, _) in pairs.items()
                              for name, rows in ((f"{arm}:chosen", [c for c, _, _ in kept]),
                                                 (f"{arm}:rejected", [r for _, r, _ in kept]))}}
    tables = (((arm, pa.Table.from_pylist(rows)) for arm, rows in fetch.items()) if whole_rows
              else chosen_rows(path, fetch, pool))
    outputs, data_hashes, sides = {}, {}, {}
    for arm, table in tables:
        if arm in selections:
            data_hashes[arm] = write_arm(table, stage.dir, arm, cfg.system_prompt)
            outputs[arm] = f"{arm}.parquet"
            outputs[f"{arm}_chat"] = f"{arm}.jsonl"
        else:
            sides[arm] = table
    for arm, (kept, _) in pairs.items():
        data_hashes[arm] = write_pairs(sides.pop(f"{arm}:chosen"), sides.pop(f"{arm}:rejected"),
                                       [m for _, _, m in kept], stage.dir, arm, pair_rules[arm]["metric"],
                                       cfg.system_prompt)
        outputs[f"{arm}_pairs"] = f"{arm}.pairs.parquet"
    # a preference arm's chosen answers stand for it in the card's metric and teacher tables
    card = data_card(pool, {**selections, **{arm: [c for c, _, _ in kept] for arm, (kept, _) in pairs.items()}},
                     cfg.score.metrics)
    card["target"] = {"metric": cfg.select.target, "direction": cfg.select.direction}
    card["rules"] = {arm: spec.to_dict() for arm, spec in specs.items()}
    teachers = sorted({str(r["teacher"]) for r in pool})
    for arm, (kept, dropped) in pairs.items():
        card["rules"][arm] = {"strategy": "pairs", **key["pairs"][arm]}
        card.setdefault("pairs", {})[arm] = pairs_card(kept, dropped, key["pairs"][arm], teachers)
    if cfg.select.sweep != "off":
        steps = sweep(groups, specs["active"], teacher_order, unit=cfg.select.sweep)
        card["sweep"] = {"unit": cfg.select.sweep, "steps": dose_response(steps, cfg.score.metrics)}
    write_json(stage.dir / "card.json", card)
    stage.finish({**outputs, "card": "card.json"}, data_hashes=data_hashes)
    return stage
