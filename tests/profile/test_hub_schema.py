"""Benchmark data from where users have it: the shared layout, a local copy in hub schema, or the hub.

``hub_data_dir`` (conftest) converts the committed excerpts of the real files (tests/data, in the shared
layout) into each suite's pinned hub schema; every suite must read the same items from it as from the
shared layout. The hub itself is unreachable here:
its path is checked for its one-line failure and, with ``load_dataset`` standing in, for the call it makes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from heredity.cli import app
from heredity.core import data as core_data
from heredity.errors import HeredityError
from heredity.profile import bbq, calibration, crows_pairs, rtp_toxicity, sources, stereoset, textual


def test_hellaswag_from_hub_schema(data_dir, hub_data_dir):
    assert calibration.load(hub_data_dir, use_hub=False) == calibration.load(data_dir)


def test_crows_pairs_from_hub_schema(data_dir, hub_data_dir):
    fields = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
    hub = crows_pairs.load(hub_data_dir, use_hub=False)
    assert [{k: r[k] for k in fields} for r in hub] == [{k: r[k] for k in fields} for r in crows_pairs.load(data_dir)]
    assert {r["stereo_antistereo"] for r in hub} == {"stereo", "antistereo"}  # the ClassLabel ints decoded


def test_stereoset_from_hub_schema(data_dir, hub_data_dir):
    def items(rows):
        return [{"id": r["id"], "target": r["target"], "bias_type": r["bias_type"], "context": r["context"],
                 "data": r["data"], "gold": [s["gold_label"] for s in r["sentences"]]} for r in rows]

    hub = stereoset.load(hub_data_dir, use_hub=False)
    assert items(hub) == items(stereoset.load(data_dir))
    # every item of the excerpt (12 of each of the 4 bias types: 48 of the 799)
    assert len(hub) == len(json.loads((data_dir / stereoset.DATA).read_text(encoding="utf-8"))) == 48


def test_bbq_from_hub_schema(data_dir, hub_data_dir):
    hub = bbq.load(hub_data_dir, use_hub=False)
    assert hub == bbq.load(data_dir)
    assert bbq.available_categories(hub_data_dir) == bbq.available_categories(data_dir) == list(hub)
    assert list(bbq.load(hub_data_dir, ["Nationality"], use_hub=False)) == ["Nationality"]
    with pytest.raises(HeredityError, match="Religion"):
        bbq.load(hub_data_dir, ["Religion"], use_hub=False)


def test_dolly_from_hub_schema_keeps_only_english(data_dir, hub_data_dir):
    splits = {}
    for split in ("val", "test", "all"):
        hub, _ = textual.load_prompts(hub_data_dir, split)
        shared, _ = textual.load_prompts(data_dir, split)
        assert hub == shared
        splits[split] = hub
    assert splits["val"] + splits["test"] == splits["all"]
    # The hub copy holds the excerpt's English rows plus one French and one German row (conftest);
    # only the English ones are read.
    english = json.loads((data_dir / textual.DATA).read_text(encoding="utf-8"))["inputs"]
    hub_rows = core_data.read_table_file(textual.HUB.local_files(hub_data_dir)[0])
    assert len(hub_rows) == len(english) + 2
    assert [p.text for p in splits["all"]] == [t.strip() for t in english.values()]


def test_rtp_from_hub_schema(data_dir, hub_data_dir):
    fields = ("prompt", "prompt_toxicity", "completion", "completion_toxicity")
    hub = rtp_toxicity.load(hub_data_dir, use_hub=False)
    assert [{k: r[k] for k in fields} for r in hub] == [{k: r[k] for k in fields} for r in rtp_toxicity.load(data_dir)]


def test_the_shared_layout_wins_over_a_hub_copy(data_dir, hub_data_dir, tmp_path):
    root = tmp_path / "both"
    shutil.copytree(hub_data_dir / "Rowan", root / "Rowan")
    (root / "hellaswag").mkdir()
    lines = (data_dir / calibration.DATA).read_text(encoding="utf-8").splitlines()[:3]
    (root / calibration.DATA).write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert len(calibration.load(root, use_hub=False)) == 3


def test_missing_everywhere_is_one_line_naming_each_place(tmp_path, monkeypatch):
    monkeypatch.setattr(core_data, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    with pytest.raises(HeredityError) as err:
        calibration.load(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / calibration.DATA) in message
    assert str(tmp_path / "Rowan/hellaswag/default") in message
    assert f"{calibration.HUB.id}@{calibration.HUB.revision}" in message and "cannot reach huggingface.co" in message
    with pytest.raises(HeredityError, match=r"no category files .* the hub: .*cannot reach"):
        bbq.load(tmp_path)


def test_hub_path_calls_load_dataset_with_the_pin(hub_data_dir, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(path, name=None, *, split, revision):
        calls.append((path, name, split, revision))
        hub = next(h for h in (calibration.HUB, stereoset.HUB) if h.id == path)
        return core_data.read_table_file(hub.local_files(hub_data_dir)[0])

    monkeypatch.setattr(core_data, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert calibration.load(tmp_path) == calibration.load(hub_data_dir, use_hub=False)
    assert stereoset.load(tmp_path)[0]["data"] == stereoset.load(hub_data_dir, use_hub=False)[0]["data"]
    assert calls == [("Rowan/hellaswag", None, "validation", calibration.HUB.revision),
                     ("McGill-NLP/stereoset", "intrasentence", "validation", stereoset.HUB.revision)]


def test_datasets_is_imported_only_for_the_hub():
    code = "import sys; import heredity.profile.sources; print('datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_status_reads_hub_copies_and_checks_sums(data_dir, hub_data_dir):
    shared = {r["path"]: r for r in sources.status(data_dir)}
    # The pinned sums are of the full files: every excerpt is found, and fails its sum.
    for path in sources.SHA256:
        assert (data_dir / path).is_file(), path
        assert shared[path]["found"] and shared[path]["checksum"] == "MISMATCH", path
    hella_lines = (data_dir / calibration.DATA).read_text(encoding="utf-8").splitlines()
    hella_rows = sum(1 for line in hella_lines if line.strip())
    english = json.loads((data_dir / textual.DATA).read_text(encoding="utf-8"))["inputs"]
    hub = {r["path"]: r for r in sources.status(hub_data_dir)}
    assert hub[calibration.DATA]["layout"] == "hub schema" and hub[calibration.DATA]["rows"] == hella_rows == 50
    assert hub[textual.DATA]["rows"] == len(english) == 50  # English rows only
    assert hub["bbq/Age.jsonl"]["rows"] == shared["bbq/Age.jsonl"]["rows"]
    assert hub["bbq/Religion.jsonl"]["state"] == "missing"
    assert hub[calibration.DATA]["checksum"] == "unpinned"  # no SHA256SUMS: not downloaded by heredity


def test_a_changed_file_fails_its_checksum(data_dir, tmp_path, monkeypatch):
    # The pinned sum is of the full file; pin the excerpt's own, so only the change can fail it.
    original = (data_dir / crows_pairs.DATA).read_bytes()
    monkeypatch.setitem(sources.SHA256, crows_pairs.DATA, hashlib.sha256(original).hexdigest())
    (tmp_path / "crows_pairs").mkdir()
    (tmp_path / crows_pairs.DATA).write_bytes(original)
    record = next(r for r in sources.status(tmp_path) if r["suite"] == "crows_pairs")
    assert record["checksum"] == "ok" and record["state"] == "found (partial)"  # 50 of 1508 rows
    result = CliRunner().invoke(app, ["data", "--data-dir", str(tmp_path), "-s", "crows_pairs"], env={"COLUMNS": "250"})
    assert result.exit_code == 0 and "sha256 differs" not in result.output, result.output

    text = original.decode("utf-8")
    assert "black" in text
    (tmp_path / crows_pairs.DATA).write_text(text.replace("black", "Black", 1), encoding="utf-8")
    record = next(r for r in sources.status(tmp_path) if r["suite"] == "crows_pairs")
    assert record["checksum"] == "MISMATCH" and record["state"] == "found (partial)"
    result = CliRunner().invoke(app, ["data", "--data-dir", str(tmp_path), "-s", "crows_pairs"], env={"COLUMNS": "250"})
    assert result.exit_code == 1 and "sha256 differs" in result.output


def test_download_writes_hub_schema_with_sums(data_dir, hub_data_dir, tmp_path, monkeypatch):
    with open(data_dir / crows_pairs.DATA, encoding="utf-8", newline="") as fh:
        n_pairs = sum(1 for _ in csv.DictReader(fh))  # the excerpt: 50 of 1508
    fetched = []

    def fake_hub_rows(hub):
        fetched.append(hub.ref)
        return core_data.read_table_file(hub.local_files(hub_data_dir)[0])

    monkeypatch.setattr(sources, "hub_rows", fake_hub_rows)
    written = sources.download(tmp_path, ["crows_pairs"], log=lambda line: None)
    assert fetched == [crows_pairs.HUB.ref] and written == [tmp_path / crows_pairs.HUB.folder / "test.jsonl"]
    meta = json.loads((tmp_path / crows_pairs.HUB.folder / "source.json").read_text())
    assert meta["revision"] == crows_pairs.HUB.revision and meta["rows"] == n_pairs == 50
    record = next(r for r in sources.status(tmp_path) if r["suite"] == "crows_pairs")
    assert record["layout"] == "hub schema" and record["checksum"] == "ok"
    assert len(crows_pairs.load(tmp_path, use_hub=False)) == n_pairs
    assert sources.download(tmp_path, ["crows_pairs"], log=lambda line: None) == []  # found now: nothing to fetch
    with open(written[0], "a", encoding="utf-8") as fh:
        fh.write(written[0].read_text(encoding="utf-8").splitlines()[0] + "\n")
    assert next(r for r in sources.status(tmp_path) if r["suite"] == "crows_pairs")["checksum"] == "MISMATCH"


def test_cli_lists_hub_copies_and_their_pins(hub_data_dir):
    result = CliRunner().invoke(app, ["data", "--data-dir", str(hub_data_dir)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "found (hub schema)" in text
    assert f"{rtp_toxicity.HUB.id}@{rtp_toxicity.HUB.revision}" in text
    assert "unverified pin" in text and "not on the hub" in text
