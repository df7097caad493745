"""Accumulate stage (rounds with ``rounds.data: accumulate``): each arm's kept data of every round
so far, in one ``<arm>.parquet`` per arm, which the train stage reads in place of the round's own
selection.

Replacing the data each round lets a chain of students drift on its own output; keeping every
earlier round's data beside the new bounds that drift (Gerstgrasser et al. 2024, "Is model
collapse inevitable?"). The stage has the select stage's shape (``<arm>.parquet`` plus the
manifest's ``data_hashes``), so training keys on the accumulated data as it keys on a selection.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from heredity.core.rundir import Stage, read_parquet, stable_hash, write_table


def run_accumulate(run_dir: Path, selects: list[Stage], arms: tuple[str, ...] | list[str]) -> Stage:
    """The kept rows of ``selects`` (oldest round first), arm by arm, with a ``round`` column."""
    hashes = [(s.manifest() or {}).get("data_hashes", {}) for s in selects]
    stage = Stage(run_dir, "accumulate", {"data": [{arm: h.get(arm) for arm in arms} for h in hashes]})
    if stage.reuse():
        return stage
    stage.start()
    data_hashes, counts = {}, {}
    for arm in arms:
        tables = []
        for number, select in enumerate(selects, start=1):
            table = read_parquet(select.dir / f"{arm}.parquet")
            tables.append(table.append_column("round", pa.array([number] * table.num_rows, pa.int64())))
        write_table(stage.dir / f"{arm}.parquet", pa.concat_tables(tables, promote_options="default"))
        data_hashes[arm] = stable_hash([h.get(arm) for h in hashes])
        counts[arm] = sum(t.num_rows for t in tables)
    stage.finish({arm: f"{arm}.parquet" for arm in arms}, data_hashes=data_hashes, counts=counts)
    return stage
