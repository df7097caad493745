"""Writes the committed test excerpts (this folder) from the full benchmark files.

    python tests/data/make_excerpts.py [SHARED_DATA_DIR]     # default: ../shared/data

Each excerpt keeps its source's own format and file name (the shared layout that
``heredity.core.data`` reads), so a suite reads an excerpt exactly as it reads the full file.
Which rows each file keeps, and why, is in README.md beside this script. Rerunning it rewrites the
same bytes: the selection is by position, never random.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROWS = 50
BBQ_ROWS = 48  # twelve whole groups of four (ambiguous/disambiguated x negative/non-negative question)
STEREOSET_PER_TYPE = 12  # the first 12 items of each of the four bias types (religion has only 12)
DOLLY_HALF = 25  # the first 25 of the paper's "val" half (rows 0-99) and of its "test" half (100-199)
SEAT_MAX_SET = 50  # SEAT tests whose four sets each hold at most this many examples


def lines(src: Path, dst: Path, n: int = ROWS) -> None:
    with open(src, encoding="utf-8") as fh:
        kept = [line for line in fh if line.strip()][:n]
    write(dst, "".join(kept))


def write(dst: Path, text: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text, encoding="utf-8", newline="")


def main(shared: Path) -> None:
    for path in sorted((shared / "alpaca_eval").glob("*.json")):
        rows = json.loads(path.read_text(encoding="utf-8"))[:ROWS]
        write(HERE / "alpaca_eval" / path.name, json.dumps(rows, indent=2, ensure_ascii=False) + "\n")

    for path in sorted((shared / "bbq").glob("*.jsonl")):
        lines(path, HERE / "bbq" / path.name, BBQ_ROWS)

    with open(shared / "crows_pairs" / "crows_pairs_anonymized.csv", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        kept = [row for _, row in zip(range(ROWS + 1), reader)]  # the header and 50 rows
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(kept)
    write(HERE / "crows_pairs" / "crows_pairs_anonymized.csv", buffer.getvalue())

    lines(shared / "hellaswag" / "hellaswag_val.jsonl", HERE / "hellaswag" / "hellaswag_val.jsonl")
    lines(shared / "rtp" / "rtp_sample_prompts.jsonl", HERE / "rtp" / "rtp_sample_prompts.jsonl")
    lines(shared / "rtp" / "rtp_toxic_test_set.jsonl", HERE / "rtp" / "rtp_toxic_test_set.jsonl")
    lines(shared / "self_instruct" / "seed_tasks.jsonl", HERE / "self_instruct" / "seed_tasks.jsonl")

    items = json.loads((shared / "stereoset" / "stereoset_intrasentence_799.json").read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    kept_items = []
    for item in items:
        seen[item["bias_type"]] = seen.get(item["bias_type"], 0) + 1
        if seen[item["bias_type"]] <= STEREOSET_PER_TYPE:
            kept_items.append(item)
    write(HERE / "stereoset" / "stereoset_intrasentence_799.json", json.dumps(kept_items, indent=2) + "\n")

    dolly = json.loads((shared / "dolly200" / "dolly_eval_eng.json").read_text(encoding="utf-8"))
    index = list(dolly["inputs"])
    keep = index[:DOLLY_HALF] + index[100:100 + DOLLY_HALF]
    write(HERE / "dolly200" / "dolly_eval_eng.json",
          json.dumps({col: {i: dolly[col][i] for i in keep} for col in dolly}, ensure_ascii=False) + "\n")

    for path in sorted((shared / "seat").glob("*.jsonl")):
        test = json.loads(path.read_text(encoding="utf-8"))
        if all(len(test[key]["examples"]) <= SEAT_MAX_SET for key in ("targ1", "targ2", "attr1", "attr2")):
            write(HERE / "seat" / path.name, path.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "shared" / "data")
