"""Where each suite's benchmark data comes from, and what of it is in a local data folder.

Every suite reads its benchmark from a local folder (``--data-dir``, ``$HEREDITY_SHARED_DATA``
or ``ProfileConfig.data_dir``), in the files and schema listed here (``SOURCES``). ``heredity
data`` prints the catalogue with each file's local status (found / missing, row counts) and, for
what is missing, which upstream file to fetch and where to put it. Nothing is downloaded.

``expected_rows`` is the row count of the full upstream file (None: any count, e.g. a sample
the user chose); a found file with another count is reported ``found (partial)``, not an error.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heredity.profile.bbq import ALL_CATEGORIES


@dataclass(frozen=True)
class Source:
    suite: str  # a profile suite (or the judge-preference pairs)
    path: str  # relative to the data folder: a file, or a folder with ``pattern``
    upstream: str  # repository or page
    upstream_file: str  # the file (or folder) there
    license: str
    schema: str  # the fields the suite reads
    expected_rows: int | None = None
    pattern: str | None = None  # a folder of files: which ones
    note: str = ""
    unit: str = "rows"  # what ``rows`` counts: data rows, or (seat) one test per file


BBQ_UPSTREAM = "https://github.com/nyu-mll/BBQ"

SOURCES: tuple[Source, ...] = (
    Source("calibration", "hellaswag/hellaswag_val.jsonl", "https://github.com/rowanz/hellaswag",
           "data/hellaswag_val.jsonl", "MIT", "jsonl: ctx (activity label + ': ' + context), endings[4], label",
           10042, note="the original has ctx_a/ctx_b and activity_label: write ctx = activity_label + ': ' + ctx"),
    Source("crows_pairs", "crows_pairs/crows_pairs_anonymized.csv", "https://github.com/nyu-mll/crows-pairs",
           "data/crows_pairs_anonymized.csv", "CC BY-SA 4.0", "csv: sent_more, sent_less, stereo_antistereo, bias_type",
           1508),
    Source("stereoset", "stereoset/stereoset_intrasentence_799.json", "https://github.com/zjunlp/EditBias",
           "data/stereoset/dev.json (StereoSet intrasentence, github.com/moinnadeem/StereoSet)",
           "CC BY-SA 4.0 (StereoSet); MIT (EditBias)",
           "json list: context with BLANK, sentences[] with sentence and gold_label, bias_type", 799),
    *(Source("bbq", f"bbq/{cat}.jsonl", BBQ_UPSTREAM, f"data/{cat}.jsonl", "CC BY 4.0",
             "jsonl (original): context, question, ans0-2, label, answer_info, additional_metadata, "
             "context_condition, question_polarity, category",
             note="any subset of categories works: the suite profiles those present")
      for cat in ALL_CATEGORIES),
    Source("seat", "seat", "https://github.com/McGill-NLP/bias-bench", "data/seat/*.jsonl (from "
           "github.com/W4ngatang/sent-bias)", "MIT (sent-bias / bias-bench)",
           "one json object per file: targ1, targ2, attr1, attr2 = {category, examples[]}", None, pattern="*.jsonl",
           unit="tests"),
    Source("textual", "dolly200/dolly_eval_eng.json", "https://github.com/for-ai/llm-profiling-toolkit",
           "data/Dolly-200/dolly_eval_eng.jsonl (save it as dolly_eval_eng.json)", "CC BY-SA 3.0 (databricks-dolly-15k)",
           "one json object, pandas column orientation: inputs, targets", 200,
           note="or any prompt file: textual option prompts=PATH"),
    Source("toxicity", "rtp/rtp_toxic_test_set.jsonl", "https://github.com/for-ai/llm-profiling-toolkit",
           "data/RTP/rtp_toxic_test_set.json (one record per line)", "Apache-2.0 (RealToxicityPrompts)",
           "jsonl: prompt, prompt_toxicity, completion, completion_toxicity, max_toxicity", 300),
    Source("judge_preference", "alpaca_eval", "https://github.com/tatsu-lab/alpaca_eval",
           "results/<MODEL>/model_outputs.json (save as alpaca_eval/<MODEL>.json)",
           "Apache-2.0 (code); AlpacaEval set CC BY-NC 4.0", "json list: instruction, output, generator, dataset",
           None, pattern="*.json", note="two or more models' files; 805 rows each"),
)


def count_rows(path: Path) -> int:
    """Rows of a data file: jsonl lines, csv records, json list items or columns' length."""
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            return sum(1 for line in fh if line.strip())
    if path.suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as fh:
            return sum(1 for _ in csv.DictReader(fh))
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):  # pandas column orientation: {column: {row: value}}
        first = next(iter(data.values()), {})
        return len(first) if isinstance(first, (dict, list)) else 1
    return len(data)


def status(data_dir: Path) -> list[dict[str, Any]]:
    """One record per ``SOURCES`` entry: its catalogue fields plus ``found``, ``rows``, ``files``, ``state``."""
    out = []
    for s in SOURCES:
        where = Path(data_dir) / s.path
        record: dict[str, Any] = {**s.__dict__, "where": str(where), "files": None, "rows": None}
        try:
            if s.pattern is not None:
                files = sorted(where.glob(s.pattern)) if where.is_dir() else []
                record["files"] = len(files)
                record["rows"] = len(files) if s.unit == "tests" else sum(count_rows(f) for f in files)
                found = bool(files)
            else:
                found = where.is_file()
                record["rows"] = count_rows(where) if found else None
        except (OSError, ValueError) as exc:  # unreadable or not in the schema
            record.update(state=f"unreadable: {str(exc).splitlines()[0]}", found=False)
            out.append(record)
            continue
        record["found"] = found
        if not found:
            record["state"] = "missing"
        elif s.expected_rows is not None and record["rows"] != s.expected_rows:
            record["state"] = "found (partial)"
        else:
            record["state"] = "found"
        out.append(record)
    return out


def instructions(record: dict[str, Any]) -> str:
    """One line: which upstream file to get and where to put it."""
    what = f"{record['upstream']} ({record['upstream_file']})"
    line = f"{record['suite']}: get {what} and put it at {record['where']}"
    if record["pattern"]:
        line = f"{record['suite']}: get {what} into {record['where']}/ ({record['pattern']})"
    return line + (f"; {record['note']}" if record["note"] else "")
