import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from heredity.config import PromptsConfig
from heredity.core.prompts import load_prompts, read_rows, to_prompts
from heredity.errors import HeredityError


def test_bundled_set_splits_into_train_and_held_out():
    rows, _ = read_rows("bundled:quickstart")
    assert len(rows) == 120
    assert len({r["prompt"] for r in rows}) == 120
    train, held_out = load_prompts(PromptsConfig())
    assert (len(train), len(held_out)) == (80, 40)
    assert not {p.id for p in train} & {p.id for p in held_out}


def test_eval_offset_takes_held_out_prompts_an_earlier_run_did_not_use():
    first = load_prompts(PromptsConfig(limit_eval=15))[1]
    train, confirm = load_prompts(PromptsConfig(eval_offset=15, limit_eval=20))
    _, everything = load_prompts(PromptsConfig())
    assert [p.id for p in confirm] == [p.id for p in everything[15:35]]
    assert not {p.id for p in confirm} & {p.id for p in first}
    assert train == load_prompts(PromptsConfig())[0]  # the offset moves evaluation only
    with pytest.raises(HeredityError, match="no eval prompts left"):
        load_prompts(PromptsConfig(eval_offset=40))


def test_self_instruct_seed_tasks_load_as_prompts(data_dir: Path):
    path = data_dir / "self_instruct" / "seed_tasks.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) == 50  # the excerpt: the first 50 of the 175 seed tasks
    train, held_out = load_prompts(PromptsConfig(source=str(path), field="instruction"))
    assert len(train) + len(held_out) == len(rows)
    assert train[0].id == "seed_task_0"
    assert {p.id: p.text for p in train + held_out} == {r["id"]: r["instruction"].strip() for r in rows}


def test_dolly_column_oriented_json(data_dir: Path):
    path = data_dir / "dolly200" / "dolly_eval_eng.json"
    inputs = list(json.loads(path.read_text(encoding="utf-8"))["inputs"].values())
    assert len(inputs) == 50  # the excerpt: 25 rows of each half of the 200
    train, held_out = load_prompts(PromptsConfig(source=str(path), field="inputs", id_field=None))
    assert len(train) + len(held_out) == len(inputs)
    # one row per index key, in the file's order: "row-N" is the Nth, every third held out
    assert held_out[0].id == "row-3" and held_out[0].text == inputs[2].strip()
    assert {p.id: p.text for p in train + held_out} == {f"row-{i}": t.strip() for i, t in enumerate(inputs, 1)}


def test_bad_jsonl_line_names_file_and_row(tmp_path: Path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": "b"\n')
    with pytest.raises(HeredityError, match=r"p.jsonl, row 2: not valid JSON"):
        read_rows(str(path))


def test_missing_and_empty_fields_name_row_and_field(tmp_path: Path):
    with pytest.raises(HeredityError, match=r"f, row 2, field 'prompt': missing"):
        to_prompts([{"prompt": "x"}, {"text": "y"}], "f", "prompt", "id")
    with pytest.raises(HeredityError, match=r"row 1, field 'prompt': must be a non-empty string"):
        to_prompts([{"prompt": "  "}], "f", "prompt", "id")
    with pytest.raises(HeredityError, match=r"row 2, field 'id': duplicate id 'a'"):
        to_prompts([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}], "f", "prompt", "id")


def test_csv_and_parquet(tmp_path: Path):
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("id,prompt\na,Say hi.\nb,Say bye.\nc,Count.\n")
    train, held_out = load_prompts(PromptsConfig(source=str(csv_path)))
    assert [p.id for p in train] == ["a", "b"] and held_out[0].text == "Count."
    pq_path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"question": ["q1", "q2", "q3"]}), pq_path)
    train, held_out = load_prompts(PromptsConfig(source=str(pq_path), field="question"))
    assert held_out[0].id == "row-3"


def test_unsupported_suffix(tmp_path: Path):
    path = tmp_path / "p.txt"
    path.write_text("hello")
    with pytest.raises(HeredityError, match="unsupported prompt file type"):
        read_rows(str(path))
