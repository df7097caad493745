"""`heredity data`: each suite's benchmark files, their source and license, local status, how to get what is missing."""

from __future__ import annotations

import csv
import hashlib
import json

from typer.testing import CliRunner

from heredity.cli import app
from heredity.profile import SUITES, sources
from heredity.profile.bbq import ALL_CATEGORIES
from heredity.profile.sources import SOURCES, status


def jsonl_rows(path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def test_every_suite_with_data_is_catalogued():
    assert {s.suite for s in SOURCES} == set(SUITES)  # lm-eval tasks bring their own data
    assert {s.path for s in SOURCES if s.suite == "bbq"} == {f"bbq/{c}.jsonl" for c in ALL_CATEGORIES}
    for s in SOURCES:
        assert s.upstream.startswith("https://") and s.license and s.schema


def test_status_on_the_committed_excerpts(data_dir, monkeypatch):
    records = {r["path"]: r for r in status(data_dir)}
    hella = records["hellaswag/hellaswag_val.jsonl"]
    # the excerpt's rows, counted here, against the full file's 10042: found, but partial
    assert hella["rows"] == jsonl_rows(data_dir / "hellaswag/hellaswag_val.jsonl") == 50
    assert hella["expected_rows"] == 10042 and hella["state"] == "found (partial)"
    with open(data_dir / "crows_pairs/crows_pairs_anonymized.csv", encoding="utf-8", newline="") as fh:
        assert records["crows_pairs/crows_pairs_anonymized.csv"]["rows"] == sum(1 for _ in csv.DictReader(fh)) == 50
    dolly = json.loads((data_dir / "dolly200/dolly_eval_eng.json").read_text(encoding="utf-8"))
    assert records["dolly200/dolly_eval_eng.json"]["rows"] == len(dolly["inputs"]) == 50
    assert records["dolly200/dolly_eval_eng.json"]["state"] == "found (partial)"
    assert records["bbq/Age.jsonl"]["rows"] == jsonl_rows(data_dir / "bbq/Age.jsonl") == 48
    present = {p.stem for p in (data_dir / "bbq").glob("*.jsonl")}
    assert present and present < set(ALL_CATEGORIES)
    for cat in ALL_CATEGORIES:  # BBQ has no expected count: any rows of a category are "found"
        assert records[f"bbq/{cat}.jsonl"]["state"] == ("found" if cat in present else "missing")
    # The sums pinned in sources.SHA256 are of the full files: every excerpt fails them.
    for path in sources.SHA256:
        assert records[path]["layout"] == "shared" and records[path]["checksum"] == "MISMATCH", path
    # Pinned to the excerpt's own sha256, the same file checks out.
    digest = hashlib.sha256((data_dir / "hellaswag/hellaswag_val.jsonl").read_bytes()).hexdigest()
    monkeypatch.setitem(sources.SHA256, "hellaswag/hellaswag_val.jsonl", digest)
    assert {r["path"]: r for r in status(data_dir)}["hellaswag/hellaswag_val.jsonl"]["checksum"] == "ok"
    assert records["seat"]["rows"] == len(list((data_dir / "seat").glob("*.jsonl")))
    assert records["alpaca_eval"]["files"] == len(list((data_dir / "alpaca_eval").glob("*.json")))


def test_status_partial_and_unreadable(tmp_path):
    (tmp_path / "rtp").mkdir()
    (tmp_path / "rtp" / "rtp_toxic_test_set.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    (tmp_path / "stereoset").mkdir()
    (tmp_path / "stereoset" / "stereoset_intrasentence_799.json").write_text("{not json")
    records = {r["suite"]: r for r in status(tmp_path)}
    assert records["toxicity"]["state"] == "found (partial)" and records["toxicity"]["rows"] == 2
    assert records["stereoset"]["state"].startswith("unreadable")


def test_cli_lists_the_committed_excerpts(data_dir, monkeypatch):
    result = CliRunner().invoke(app, ["data", "--data-dir", str(data_dir)], env={"COLUMNS": "250"})
    hella = next(line for line in result.output.splitlines() if "hellaswag/hellaswag_val.jsonl" in line)
    rows = jsonl_rows(data_dir / "hellaswag/hellaswag_val.jsonl")
    # the excerpt's rows of the full file's, a partial find, and its sum unlike the pinned full file's
    assert f"{rows} / 10042" in hella and "found (partial)" in hella and "MISMATCH" in hella
    # A sum that differs from the pinned one fails the command, in one line naming the column.
    assert result.exit_code == 1, result.output
    assert "error: a file's sha256 differs from the one pinned" in " ".join(result.output.split())
    # Pinned to the excerpts' own sums, the same folder checks out: every pinned file "ok", exit 0.
    for path in list(sources.SHA256):
        monkeypatch.setitem(sources.SHA256, path, hashlib.sha256((data_dir / path).read_bytes()).hexdigest())
    result = CliRunner().invoke(app, ["data", "--data-dir", str(data_dir)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for path in sources.SHA256:
        line = next(line for line in result.output.splitlines() if f" {path} " in line)
        assert " ok " in line and "MISMATCH" not in line, line
    assert "https://github.com/nyu-mll/BBQ" in result.output and "CC BY 4.0" in result.output
    assert "https://github.com/nyu-mll/BBQ" in result.output and "CC BY 4.0" in result.output


def test_cli_on_an_empty_folder_says_how_to_get_everything(tmp_path):
    result = CliRunner().invoke(app, ["data", "--data-dir", str(tmp_path)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "found" not in result.output.replace("not found", "")
    assert f"{len(SOURCES)} missing" in result.output
    text = " ".join(result.output.split())
    for s in SOURCES:  # every file: its upstream and where to put it
        assert f"get {s.upstream}" in text
        assert str(tmp_path / s.path) in text
    assert "Religion.jsonl" in text
    only = CliRunner().invoke(app, ["data", "--data-dir", str(tmp_path), "-s", "calibration"], env={"COLUMNS": "250"})
    assert "1 missing" in only.output and "bbq" not in only.output
