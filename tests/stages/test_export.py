"""`heredity export`: a real finished run (the embedded model, real training) exported to hub/TRL
datasets and models with their cards, offline and with a mocked hub push."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import tiny_config
from typer.testing import CliRunner

from heredity.cli import app
from heredity.reporting.html import fmt

pytestmark = pytest.mark.slow
DATA = "data/train-00000-of-00001.parquet"
TOKEN = "hf_exportTestTokenNeverWritten0123456789"


def invoke(*args, env: dict | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def front_matter(card: Path) -> tuple[dict, str]:
    text = card.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, _, body = text[4:].partition("\n---\n")
    return yaml.safe_load(head), body


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def linked_copy(run: Path, target: Path) -> Path:
    """A copy of the run whose files are hard links (the models are hundreds of MB); files a test
    rewrites are replaced, never written through the link."""
    shutil.copytree(run, target, copy_function=os.link, ignore=shutil.ignore_patterns("export", ".heredity.lock"))
    return target


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    from heredity.pipeline import run
    from heredity.plan import config_from_dict

    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HEREDITY_SCORE_CACHE", str(root / "scores.sqlite"))  # not the user's score cache
        run(config_from_dict(tiny_config()), root / "run")
    return root / "run"


@pytest.fixture(scope="module")
def exported(finished_run) -> Path:
    code, output = invoke("export", finished_run)
    assert code == 0, output
    return finished_run / "export"


def test_export_writes_a_dataset_and_a_model_per_arm_and_an_index(exported):
    assert sorted(p.name for p in (exported / "datasets").iterdir()) == ["active", "passive"]
    assert sorted(p.name for p in (exported / "models").iterdir()) == ["active", "passive"]
    for arm in ("active", "passive"):
        assert (exported / "datasets" / arm / DATA).is_file() and (exported / "datasets" / arm / "README.md").is_file()
        assert (exported / "models" / arm / "README.md").is_file()
    index = json.loads((exported / "export.json").read_text())
    assert [(f["kind"], f["arm"]) for f in index["folders"]] == [
        ("dataset", "passive"), ("dataset", "active"), ("model", "passive"), ("model", "active")]
    assert all(f["repo_id"] is None for f in index["folders"])  # offline: no hub names
    readme = (exported / "README.md").read_text()
    assert "[datasets/active](datasets/active/)" in readme and "[models/passive](models/passive/)" in readme
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".export.")]  # no temp folder left


def test_each_dataset_loads_and_holds_the_selected_rows(finished_run, exported):
    from datasets import load_dataset

    for arm in ("active", "passive"):
        ds = load_dataset("parquet", data_files=str(exported / "datasets" / arm / DATA), split="train")
        selected = pq.read_table(finished_run / "select" / f"{arm}.parquet").to_pylist()
        assert len(ds) == len(selected)
        assert [r["prompt_id"] for r in ds] == [r["prompt_id"] for r in selected]
        for row, source in zip(ds, selected):
            assert row["prompt"] == [{"role": "user", "content": source["prompt"]}]  # no system prompt in the run
            assert row["completion"] == [{"role": "assistant", "content": source["text"]}]
            assert (row["teacher"], row["sample_index"], row["finish_reason"]) == \
                (source["teacher"], source["sample_index"], source["finish_reason"])
            assert row["length"] == source["length"] and row["mtld"] == pytest.approx(source["mtld"])


def test_dataset_card_front_matter_is_what_the_hub_reads(finished_run, exported):
    from datasets import Features

    card = json.loads((finished_run / "select" / "card.json").read_text())
    meta, body = front_matter(exported / "datasets" / "active" / "README.md")
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": DATA}]}]
    assert meta["task_categories"] == ["text-generation"]
    assert {"synthetic", "heredity"} <= set(meta["tags"])
    schema = pq.read_schema(exported / "datasets" / "active" / DATA)
    assert meta["dataset_info"]["features"] == Features.from_arrow_schema(schema)._to_yaml_list()
    assert meta["dataset_info"]["splits"][0]["num_examples"] == 6
    # every source of the tiny run states apache-2.0: the embedded SmolLM2 teacher and heredity's bundled prompts
    assert meta["license"] == "apache-2.0"
    # the body: rule, pool, shares, target's pool vs kept mean, dropped prompts, provenance, loading
    target = card["metrics"]["length"]
    assert f"| length (target) | {fmt(target['pool']['mean'])} | {fmt(target['active']['mean'])} |" in body
    assert "best (metric=length, direction=max)" in body and "12 candidates in all" in body
    assert "k = 2 candidates per prompt" in body and "smollm2-135m-instruct 100%" in body
    assert "prompts the rule dropped: 0" in body
    select_manifest = json.loads((finished_run / "select" / "manifest.json").read_text())
    assert select_manifest["key"] in body and select_manifest["data_hashes"]["active"] in body
    assert 'load_dataset("parquet", data_files=' in body and "SFTTrainer(" in body


def test_model_folder_is_the_trained_model_and_loads(finished_run, exported):
    from transformers import AutoModelForCausalLM

    for arm in ("active", "passive"):
        source = finished_run / "train" / arm / "model"
        target = exported / "models" / arm
        assert [p.name for p in files(source)] == [p.name for p in files(target) if p.name != "README.md"]
        for src in files(source):
            dst = target / src.name
            assert dst.read_bytes() == src.read_bytes()
        # hard links on one file system: the weights are not stored twice
        assert (target / "model.safetensors").stat().st_ino == (source / "model.safetensors").stat().st_ino
    model = AutoModelForCausalLM.from_pretrained(exported / "models" / "active")
    assert model.num_parameters() > 1e8


def test_model_card_states_the_arms_figures_from_the_summary(finished_run, exported):
    summary = json.loads((finished_run / "summary.json").read_text())
    meta, body = front_matter(exported / "models" / "active" / "README.md")
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert {"heredity", "sft"} <= set(meta["tags"])
    assert "datasets" not in meta  # offline: the datasets have no hub id yet
    for other in ("passive", "base"):
        d = summary["differences"][f"active_vs_{other}"]["length"]
        lo, hi = d["ci95"]
        headline = f"vs `{other}` on the target `length`: {fmt(d['diff'])} [95% CI {fmt(lo)}, {fmt(hi)}], "
        headline += f"q = {fmt(d['q'])}"
        assert headline in body
        assert f"| active − {other} | length (target) | primary | {fmt(d['diff'])} | [{fmt(lo)}, {fmt(hi)}] |" in body
    lo, hi = summary["ci95"]["active"]["mtld"]
    assert f"| mtld | {fmt(summary['arms']['active']['mtld'])} [{fmt(lo)}, {fmt(hi)}] |" in body
    result = summary["training"]["active"]
    assert f"| optimiser steps | {result['steps']} |" in body and "| seed | 0 |" in body
    assert "| max length | 128 tokens" in body and "| learning rate | 0.0001, linear" in body
    assert "| precision | fp32 |" in body  # the fixture trains on CPU with train.bf16 unset
    assert "greedy answers" in body and "4 held-out prompts" in body
    assert "[`datasets/active`](../../datasets/active)" in body
    assert "dequantised to float32" in body  # the embedded base is not the hub's original weights


def test_bad_input_is_one_line_without_traceback(tmp_path, finished_run):
    for run_dir, expected in ((tmp_path / "missing", "not a finished run (no summary.json)"),
                              (finished_run / "select", "not a finished run (no summary.json)")):
        code, output = invoke("export", run_dir)
        assert code == 1 and expected in output and "Traceback" not in output
        assert len([line for line in output.splitlines() if line.strip()]) == 1, output
    # a folder that is not an export is never replaced
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    code, output = invoke("export", finished_run, "--out", other)
    assert code == 1 and "is not a heredity export" in output and "Traceback" not in output
    assert (other / "notes.txt").read_text() == "keep me" and len(list(other.iterdir())) == 1
    code, output = invoke("export", finished_run, "--out", tmp_path / "x", "--private")
    assert code == 1 and "--private goes with --push" in output


def test_push_uploads_every_folder_and_writes_no_token(tmp_path, finished_run, monkeypatch):
    import huggingface_hub

    calls = []

    def create_repo(self, repo_id, repo_type=None, private=None, exist_ok=False, **kw):
        calls.append(("create", repo_id, repo_type, private, exist_ok))
        return f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"

    def upload_folder(self, repo_id, folder_path, repo_type=None, commit_message=None, **kw):
        assert (Path(folder_path) / "README.md").is_file()
        calls.append(("upload", repo_id, repo_type, Path(folder_path).relative_to(out).as_posix()))

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "pushed"
    code, output = invoke("export", finished_run, "--out", out, "--push", "me", "--private")
    assert code == 0, output
    assert TOKEN not in output
    expected = [("dataset", "me/tiny-passive-data", "datasets/passive"),
                ("dataset", "me/tiny-active-data", "datasets/active"),
                ("model", "me/tiny-passive", "models/passive"), ("model", "me/tiny-active", "models/active")]
    assert calls == [c for kind, repo, path in expected
                     for c in (("create", repo, kind, True, True), ("upload", repo, kind, path))]
    for path in files(out):
        assert TOKEN.encode() not in path.read_bytes(), path
    meta, body = front_matter(out / "models" / "active" / "README.md")
    assert meta["datasets"] == ["me/tiny-active-data"]
    assert "https://huggingface.co/datasets/me/tiny-active-data" in body
    dataset_card = (out / "datasets" / "active" / "README.md").read_text()
    assert 'load_dataset("me/tiny-active-data", split="train")' in dataset_card


def test_push_without_a_token_fails_before_writing(tmp_path, finished_run, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    code, output = invoke("export", finished_run, "--out", tmp_path / "o", "--push", "me")
    assert code == 1 and "--push needs a hub token" in output and not (tmp_path / "o").exists()


def test_a_credential_value_in_a_card_stops_the_export(tmp_path, finished_run, monkeypatch):
    # pretend the key of an API teacher happens to be a string the cards hold
    monkeypatch.setenv("OPENAI_API_KEY", "HuggingFaceTB/SmolLM2-135M-Instruct")
    code, output = invoke("export", finished_run, "--out", tmp_path / "o")
    assert code == 1 and "value of a credential variable" in output
    assert "SmolLM2-135M-Instruct" not in output and not (tmp_path / "o").exists()


def test_preference_pairs_are_exported_in_the_preference_schema(tmp_path, finished_run):
    from datasets import load_dataset

    run = linked_copy(finished_run, tmp_path / "run")
    rows = pq.read_table(run / "select" / "active.parquet").to_pylist()
    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    schema = pa.schema([("prompt", messages), ("chosen", messages), ("rejected", messages), ("prompt_id", pa.string()),
                        ("chosen_teacher", pa.string()), ("rejected_teacher", pa.string()),
                        ("chosen_score", pa.float64()), ("rejected_score", pa.float64()), ("margin", pa.float64())])
    pairs = [{"prompt": [{"role": "user", "content": r["prompt"]}],
              "chosen": [{"role": "assistant", "content": r["text"]}],
              "rejected": [{"role": "assistant", "content": "short"}], "prompt_id": r["prompt_id"],
              "chosen_teacher": r["teacher"], "rejected_teacher": "other" if i % 2 else r["teacher"],
              "chosen_score": r["length"], "rejected_score": 1.0, "margin": float(i + 1)} for i, r in enumerate(rows)]
    pq.write_table(pa.Table.from_pylist(pairs, schema=schema), run / "select" / "dpo.pairs.parquet")
    card = json.loads((run / "select" / "card.json").read_text())
    card["pairs"] = {"dpo": {"rule": {"metric": "length", "rejected": "worst"}, "pairs": len(pairs),
                             "dropped": {"tie": 2, "below_margin": 0}}}
    (run / "select" / "card.json").unlink()  # a hard link: replace, never write through
    (run / "select" / "card.json").write_text(json.dumps(card))
    code, output = invoke("export", run)
    assert code == 0, output
    folder = run / "export" / "datasets" / "dpo-pairs"
    ds = load_dataset("parquet", data_files=str(folder / DATA), split="train")
    assert ds.column_names[:3] == ["prompt", "chosen", "rejected"] and len(ds) == len(pairs)
    assert [r["prompt_id"] for r in ds] == [p["prompt_id"] for p in pairs]
    meta, body = front_matter(folder / "README.md")
    assert {"dpo", "heredity", "synthetic"} <= set(meta["tags"]) and meta["configs"][0]["data_files"][0]["path"] == DATA
    assert "6 pairs; prompts without a pair, by reason: tie 2, below_margin 0." in body
    assert "min 1, q25 2.25, median 3.5, q75 4.75, max 6, mean 3.5" in body
    assert "Chosen answers by teacher: smollm2-135m-instruct 100%" in body
    assert "Rejected answers by teacher: other 50%, smollm2-135m-instruct 50%" in body
    assert "DPOTrainer(" in body
    # and a run without pairs exports none (the offline export above)
    assert not (finished_run / "export" / "datasets" / "dpo-pairs").exists()


def test_several_seeds_and_a_lora_adapter(tmp_path, finished_run):
    run = linked_copy(finished_run, tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    first = {"arms": summary["arms"], "differences": summary["differences"]}
    summary["seeds"] = {"values": [0, 1], "per_seed": {"0": first}}
    (run / "summary.json").unlink()
    (run / "summary.json").write_text(json.dumps(summary))
    adapter = run / "train" / "active" / "model"
    shutil.rmtree(adapter)
    adapter.mkdir()
    config = {"base_model_name_or_path": "embedded:smollm2-135m-instruct", "peft_type": "LORA", "r": 16}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    code, output = invoke("export", run)
    assert code == 0, output
    model = run / "export" / "models" / "active"
    assert json.loads((model / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    meta, body = front_matter(model / "README.md")
    assert meta["library_name"] == "peft" and meta["base_model_relation"] == "adapter"
    assert "AutoPeftModelForCausalLM" in body
    assert "2 seeds (0, 1)" in body and "`seeds/seed-1/train/active/model`" in body
    assert "`seeds/seed-1/select/`" in (run / "export" / "datasets" / "active" / "README.md").read_text()
    # exporting again replaces the earlier export
    code, output = invoke("export", run)
    assert code == 0, output
