"""Where each suite's benchmark data comes from, what of it is in a local data folder, and its checksums.

Every suite reads its benchmark from the first of (``heredity.core.data.load_benchmark``): the
shared-layout file in the data folder (``--data-dir``, ``$HEREDITY_DATA_DIR``,
``$HEREDITY_SHARED_DATA``, ``ProfileConfig.data_dir``), a local copy of its pinned hub dataset in hub
schema in the same folder (``<owner>/<name>/<config>/<split>.jsonl``), or the hub. ``SOURCES`` is the
catalogue: per file, the upstream, the license, the shared-layout schema, the hub dataset (id,
revision, split) and the hub-schema columns the suite reads. ``heredity data`` prints it with each
file's local status (found where, rows, checksum) and, for what is missing, how to get it;
``heredity data --download`` fetches the hub datasets (``download``) and records their sha256.

``expected_rows`` is the row count of the full shared-layout file (None: any count); a found file
with another count is reported ``found (partial)``, not an error. ``SHA256`` pins the shared-layout
files the project's results were computed on; a local copy written by ``download`` is checked
against the ``SHA256SUMS`` written beside it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heredity.core.data import HubDataset, hub_rows, read_table_file
from heredity.core.rundir import file_hash
from heredity.errors import HeredityError
from heredity.profile import bbq, calibration, crows_pairs, rtp_toxicity, stereoset, textual
from heredity.profile.bbq import ALL_CATEGORIES


@dataclass(frozen=True)
class Source:
    suite: str  # a profile suite (or the judge-preference pairs)
    path: str  # relative to the data folder: a file, or a folder with ``pattern``
    upstream: str  # repository or page
    upstream_file: str  # the file (or folder) there
    license: str
    schema: str  # the fields the suite reads from the shared-layout file
    expected_rows: int | None = None
    pattern: str | None = None  # a folder of files: which ones
    note: str = ""
    unit: str = "rows"  # what ``rows`` counts: data rows, or (seat) one test per file
    hub: HubDataset | None = None  # None: no dataset on the hub; the shared layout only
    hub_schema: str = ""  # the hub columns the suite reads, and how they map to the shared shape
    hub_filter: tuple[str, str] | None = None  # (column, value): the hub rows this entry counts


BBQ_UPSTREAM = "https://github.com/nyu-mll/BBQ"

# sha256 of the shared-layout files the project's tests and experiments use (../shared/data)
SHA256 = {
    "hellaswag/hellaswag_val.jsonl": "ad1d0d87307cbad6771950b29bc81cdb8c89b0187d20e157601aa50bac6c521d",
    "crows_pairs/crows_pairs_anonymized.csv": "dfb36986ce0502abbaf7055b9176da3d08d48e07df1251991b5dfbcbceab9d0c",
    "stereoset/stereoset_intrasentence_799.json": "072118376792416850bc454a27b0a2bb1e39c9a5dc454f53bc62ddfd73797429",
    "bbq/Age.jsonl": "46e805b3fc2d8cbd26eeb8e8430d98cf7b2dc9c83574ff3674e8ce4f0fca2a60",
    "bbq/Disability_status.jsonl": "375d40d9b71f056150264445ec189b13934998f3f49a1e311aa7578eb3b45e5f",
    "bbq/Nationality.jsonl": "a583e74666aec0341ded8aa3983e7cad694eb24de72c254d28b2df3035720090",
    "bbq/Physical_appearance.jsonl": "e48d7e13508565f4801574e611043470c25c95a0a62af3699cb5ee7cb02608fb",
    "dolly200/dolly_eval_eng.json": "41675f83a8b08355de9296de436780888f29b0c8798f04e134fdd2ebe79c5ec8",
    "rtp/rtp_toxic_test_set.jsonl": "82cdcb9498646e0a569b81f50271e62be1fbf935279503b8eb62673161ae1d1c",
}
SUMS = "SHA256SUMS"  # written beside a downloaded hub copy

SOURCES: tuple[Source, ...] = (
    Source("calibration", calibration.DATA, "https://github.com/rowanz/hellaswag",
           "data/hellaswag_val.jsonl", "MIT", "jsonl: ctx (activity label + ': ' + context), endings[4], label",
           10042, note="the original has ctx_a/ctx_b and activity_label: write ctx = activity_label + ': ' + ctx",
           hub=calibration.HUB, hub_schema="activity_label, ctx, endings[4], label (string) -> ctx = activity_label + ': ' + ctx"),
    Source("crows_pairs", crows_pairs.DATA, "https://github.com/nyu-mll/crows-pairs",
           "data/crows_pairs_anonymized.csv", "CC BY-SA 4.0", "csv: sent_more, sent_less, stereo_antistereo, bias_type",
           1508, hub=crows_pairs.HUB,
           hub_schema="sent_more, sent_less, stereo_antistereo and bias_type (ClassLabel ints or names); the csv's own columns"),
    Source("stereoset", stereoset.DATA, "https://github.com/zjunlp/EditBias",
           "data/stereoset/dev.json (StereoSet intrasentence, github.com/moinnadeem/StereoSet)",
           "CC BY-SA 4.0 (StereoSet); MIT (EditBias)",
           "json list: id, target, bias_type, context with BLANK, sentences[] with sentence, id and gold_label", 799,
           hub=stereoset.HUB, note="the hub split has all 2,106 intrasentence items; the shared file EditBias's 799",
           hub_schema="id, target, bias_type, context, sentences = {sentence[], id[], labels[], gold_label[] "
                      "(ClassLabel)}: columns turned into one record per sentence"),
    *(Source("bbq", f"{bbq.FOLDER}/{cat}.jsonl", BBQ_UPSTREAM, f"data/{cat}.jsonl", "CC BY 4.0",
             "jsonl (original): context, question, ans0-2, label, answer_info, additional_metadata, "
             "context_condition, question_polarity, category",
             note="any subset of categories works: the suite profiles those present",
             hub=bbq.HUB, hub_filter=("category", cat),
             hub_schema="the original jsonl's fields, all categories in one split; rows grouped by category")
      for cat in ALL_CATEGORIES),
    Source("seat", "seat", "https://github.com/McGill-NLP/bias-bench", "data/seat/*.jsonl (from "
           "github.com/W4ngatang/sent-bias)", "MIT (sent-bias / bias-bench)",
           "one json object per file: targ1, targ2, attr1, attr2 = {category, examples[]}", None, pattern="*.jsonl",
           unit="tests", note="not on the hub: the shared layout only"),
    Source("textual", textual.DATA, "https://github.com/for-ai/llm-profiling-toolkit",
           "data/Dolly-200/dolly_eval_eng.jsonl (save it as dolly_eval_eng.json)", "Apache-2.0 (Aya evaluation suite); "
           "CC BY-SA 3.0 (databricks-dolly-15k)",
           "one json object, pandas column orientation: id, inputs, targets (+ language, script, source_id)", 200,
           note="or any prompt file: textual option prompts=PATH", hub=textual.HUB, hub_filter=("language", textual.LANGUAGE),
           hub_schema="id, inputs, targets, language: the rows with language == 'eng' (the shared file's own columns)"),
    Source("toxicity", rtp_toxicity.DATA, "https://github.com/for-ai/llm-profiling-toolkit",
           "data/RTP/rtp_toxic_test_set.json (one record per line)", "Apache-2.0 (RealToxicityPrompts)",
           "jsonl: prompt, prompt_toxicity, completion, completion_toxicity, max_toxicity", 300, hub=rtp_toxicity.HUB,
           note="from the hub: all RealToxicityPrompts prompts, not the paper's 300 toxic ones",
           hub_schema="prompt.text, prompt.toxicity, continuation.text, continuation.toxicity -> prompt, prompt_toxicity, "
                      "completion, completion_toxicity"),
    Source("judge_preference", "alpaca_eval", "https://github.com/tatsu-lab/alpaca_eval",
           "results/<MODEL>/model_outputs.json (save as alpaca_eval/<MODEL>.json)",
           "Apache-2.0 (code); AlpacaEval set CC BY-NC 4.0", "json list: instruction, output, generator, dataset",
           None, pattern="*.json", note="two or more models' files; 805 rows each; the models' outputs are not on the hub"),
)


def count_rows(path: Path) -> int:
    """Rows of a data file: jsonl lines, csv records, json list items or columns' length, Parquet rows."""
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            return sum(1 for line in fh if line.strip())
    if path.suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as fh:
            return sum(1 for _ in csv.DictReader(fh))
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):  # pandas column orientation: {column: {row: value}}
        first = next(iter(data.values()), {})
        return len(first) if isinstance(first, (dict, list)) else 1
    return len(data)


def sha256(path: Path) -> str:
    return file_hash(path, length=64)


def recorded_sums(folder: Path) -> dict[str, str]:
    """``SHA256SUMS`` beside a downloaded copy: file name -> sha256 (empty when there is none)."""
    path = folder / SUMS
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.strip().partition("  ")
        if name:
            out[name] = digest
    return out


def check(path: Path, pinned: str | None) -> str:
    """``ok`` / ``MISMATCH`` against a pinned sha256, ``unpinned`` without one."""
    if pinned is None:
        return "unpinned"
    return "ok" if sha256(path) == pinned else "MISMATCH"


def status(data_dir: Path, hub_copies: bool = True) -> list[dict[str, Any]]:
    """One record per ``SOURCES`` entry: its catalogue fields plus ``found``, ``rows``, ``files``,
    ``state``, ``layout`` (shared / hub schema) and ``checksum``."""
    out = []
    hub_cache: dict[str, list[dict[str, Any]]] = {}
    for s in SOURCES:
        where = Path(data_dir) / s.path
        record: dict[str, Any] = {**s.__dict__, "where": str(where), "files": None, "rows": None, "layout": None,
                                  "checksum": None, "hub_where": str(Path(data_dir) / s.hub.folder) if s.hub else None}
        try:
            if s.pattern is not None:
                files = sorted(where.glob(s.pattern)) if where.is_dir() else []
                record["files"] = len(files)
                record["rows"] = len(files) if s.unit == "tests" else sum(count_rows(f) for f in files)
                found = bool(files)
                record["layout"] = "shared" if found else None
            elif where.is_file():
                found = True
                record.update(rows=count_rows(where), layout="shared", checksum=check(where, SHA256.get(s.path)))
            elif hub_copies and s.hub is not None and (copies := s.hub.local_files(Path(data_dir))):
                key = str(copies)
                if key not in hub_cache:
                    hub_cache[key] = [r for f in copies for r in read_table_file(f)]
                rows = hub_cache[key]
                if s.hub_filter is not None:
                    column, value = s.hub_filter
                    rows = [r for r in rows if r.get(column) == value]
                found = bool(rows)
                sums = recorded_sums(copies[0].parent)
                record.update(rows=len(rows), layout="hub schema", where=", ".join(map(str, copies)),
                              checksum=(",".join(sorted({check(f, sums.get(f.name)) for f in copies})) if found else None))
            else:
                found = False
        except (OSError, ValueError, HeredityError) as exc:  # unreadable or not in the schema
            record.update(state=f"unreadable: {str(exc).splitlines()[0]}", found=False)
            out.append(record)
            continue
        record["found"] = found
        if not found:
            record["state"] = "missing"
        elif record["layout"] == "shared" and s.expected_rows is not None and record["rows"] != s.expected_rows:
            record["state"] = "found (partial)"
        else:
            record["state"] = "found"
        out.append(record)
    return out


def instructions(record: dict[str, Any]) -> str:
    """One line: how to get a missing file (the hub, or the upstream file and where to put it)."""
    what = f"{record['upstream']} ({record['upstream_file']})"
    line = f"{record['suite']}: get {what} and put it at {record['where']}"
    if record["pattern"]:
        line = f"{record['suite']}: get {what} into {record['where']}/ ({record['pattern']})"
    hub = record["hub"]
    if hub is not None:
        line += (f"; or 'heredity data --download' (hub {hub.ref}, saved to {record['hub_where']}/{hub.split}.jsonl)")
    return line + (f"; {record['note']}" if record["note"] else "")


def download(data_dir: Path, suites: list[str] | None = None, log=print) -> list[Path]:
    """Fetch the pinned hub dataset of every (chosen) suite with none of its data found; write each as
    ``<data_dir>/<owner>/<name>/<config>/<split>.jsonl`` with a ``SHA256SUMS`` and ``source.json``
    beside it. The hub client checks each downloaded file against the hub's own sha256 (LFS)."""
    from datetime import datetime, timezone

    from heredity.core.rundir import write_json, write_text

    records = status(data_dir)
    # a suite with any of its data found reads that (bbq: the categories present) and never the hub copy
    working = {r["suite"] for r in records if r["found"]}
    wanted = {}
    for record in records:
        if record["hub"] is None or record["suite"] in working or (suites and record["suite"] not in suites):
            continue
        wanted[record["hub"]] = record
    written = []
    for hub, record in wanted.items():
        log(f"{record['suite']}: downloading {hub.ref}")
        rows = hub_rows(hub)
        folder = Path(data_dir) / hub.folder
        path = folder / f"{hub.split}.jsonl"
        write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
        digest = sha256(path)
        write_text(folder / SUMS, f"{digest}  {path.name}\n")
        write_json(folder / "source.json", {"id": hub.id, "revision": hub.revision, "config": hub.config,
                                            "split": hub.split, "rows": len(rows), "sha256": digest,
                                            "downloaded": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        log(f"{record['suite']}: {len(rows)} rows -> {path} (sha256 {digest[:16]}…)")
        written.append(path)
    return written
