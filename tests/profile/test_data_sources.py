"""`heredity data`: each suite's benchmark files, their source and license, local status, how to get what is missing."""

from __future__ import annotations

from typer.testing import CliRunner

from heredity.cli import app
from heredity.profile import SUITES
from heredity.profile.bbq import ALL_CATEGORIES
from heredity.profile.sources import SOURCES, status


def test_every_suite_with_data_is_catalogued():
    assert {s.suite for s in SOURCES} == set(SUITES)  # lm-eval tasks bring their own data
    assert {s.path for s in SOURCES if s.suite == "bbq"} == {f"bbq/{c}.jsonl" for c in ALL_CATEGORIES}
    for s in SOURCES:
        assert s.upstream.startswith("https://") and s.license and s.schema


def test_status_on_the_shared_data(data_dir):
    records = {r["path"]: r for r in status(data_dir)}
    assert records["hellaswag/hellaswag_val.jsonl"]["state"] == "found"
    assert records["hellaswag/hellaswag_val.jsonl"]["rows"] == 10042
    assert records["crows_pairs/crows_pairs_anonymized.csv"]["rows"] == 1508
    assert records["dolly200/dolly_eval_eng.json"]["rows"] == 200
    assert records["bbq/Age.jsonl"]["rows"] == 3680
    present = {p.stem for p in (data_dir / "bbq").glob("*.jsonl")}
    for cat in ALL_CATEGORIES:
        assert records[f"bbq/{cat}.jsonl"]["state"] == ("found" if cat in present else "missing")
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


def test_cli_lists_the_real_folder(data_dir):
    result = CliRunner().invoke(app, ["data", "--data-dir", str(data_dir)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "hellaswag/hellaswag_val.jsonl" in result.output and "10042 / 10042" in result.output
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
