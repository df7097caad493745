"""Every bad input ends the command in one line naming the file, row and field, before any work,
and a finished run directory is left byte for byte as it was (issue #13)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from .conftest import error_lines, invoke, replay_config, snapshot

Case = Callable[[Path, Path, Path], tuple[list[str], list[str]]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


def write_config(tmp: Path, cfg: dict, name: str = "config.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def select_args(tmp: Path, data: Path, out: Path, **extra) -> list[str]:
    return ["select", write_config(tmp, replay_config(data, **extra)), "--out", out]


def prompts_args(tmp: Path, data: Path, out: Path, source: Path, **prompts) -> list[str]:
    spec = {"source": str(source), "field": "prompt", "id_field": "id", "eval_every": None, **prompts}
    return select_args(tmp, data, out, prompts=spec)


def train_args(tmp: Path, data: Path, out: Path, **extra) -> list[str]:
    """`heredity run` (up to training): the student, training and device are checked too."""
    cfg = replay_config(data, **extra)
    cfg["prompts"]["eval_every"] = 2
    return ["run", write_config(tmp, cfg), "--out", out]


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --- the config file ----------------------------------------------------------------------

@case
def config_not_utf8(tmp, data, out):
    path = tmp / "latin1.yaml"
    path.write_bytes("name: café\nk: 1\n".encode("latin-1"))
    return ["select", path, "--out", out], [str(path), "not UTF-8"]


@case
def config_duplicate_key(tmp, data, out):
    path = tmp / "dup.yaml"
    path.write_text("k: 1\nname: a\nk: 2\n", encoding="utf-8")
    return ["select", path, "--out", out], [str(path), "line 3", "'k' appears twice (first on line 1)"]


@case
def config_duplicate_nested_key(tmp, data, out):
    path = tmp / "dup2.yaml"
    path.write_text("select:\n  metric: words\n  direction: max\n  metric: ttr\n", encoding="utf-8")
    return ["select", path, "--out", out], [str(path), "line 4", "'metric' appears twice"]


@case
def config_bad_yaml(tmp, data, out):
    path = tmp / "bad.yaml"
    path.write_text("k: [1, 2\nname: x\n", encoding="utf-8")
    return ["select", path, "--out", out], [str(path), "not valid YAML"]


@case
def config_missing_file(tmp, data, out):
    path = tmp / "configs[v2]" / "missing.yaml"
    return ["select", path, "--out", out], [str(path), "config file not found"]


@case
def config_not_a_mapping(tmp, data, out):
    path = tmp / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    return ["select", path, "--out", out], [str(path), "mapping"]


@case
def config_k_yes(tmp, data, out):
    path = tmp / "yes.yaml"
    cfg = replay_config(data)
    text = yaml.safe_dump(cfg).replace("k: 1", "k: yes")
    path.write_text(text, encoding="utf-8")
    return ["select", path, "--out", out], [str(path), "field 'k'", "boolean"]


@case
def config_k_zero(tmp, data, out):
    return select_args(tmp, data, out, k=0), ["field 'k'", "greater than or equal to 1"]


@case
def config_bool_as_number(tmp, data, out):
    return select_args(tmp, data, out, train={"packing": 2}), ["field 'train.packing'", "true or false"]


@case
def config_strategy_k_yes(tmp, data, out):
    rule = {"strategy": "first_k", "k": True, "then": "first"}
    return (select_args(tmp, data, out, select={"target": "words", "active": rule}),
            ["field 'select.active'", "parameter 'k'", "boolean"])


@case
def config_unknown_key(tmp, data, out):
    return select_args(tmp, data, out, selct={"metric": "words"}), ["unknown key 'selct'"]


@case
def config_misspelt_select_metric(tmp, data, out):
    return (select_args(tmp, data, out, select={"target": "wrds", "direction": "max"}),
            ["field 'select.target'", "wrds"])


@case
def config_unknown_score_metric(tmp, data, out):
    return (select_args(tmp, data, out, score={"metrics": ["words", "lenght[v2]"]}),
            ["field 'score.metrics.1'", "lenght[v2]"])


@case
def config_unknown_strategy(tmp, data, out):
    return (select_args(tmp, data, out, select={"target": "words", "active": {"strategy": "bestest"}}),
            ["field 'select.active'", "bestest"])


@case
def config_teacher_name_escapes(tmp, data, out):
    cfg = replay_config(data)
    cfg["teachers"][0]["name"] = "../../outside"
    return ["select", write_config(tmp, cfg), "--out", out], ["field 'teachers.0.name'", "'../../outside'"]


@case
def config_teacher_name_with_slash(tmp, data, out):
    cfg = replay_config(data)
    cfg["teachers"][1]["name"] = "team/zephyr"
    return ["select", write_config(tmp, cfg), "--out", out], ["field 'teachers.1.name'", "'team/zephyr'"]


@case
def config_bad_variant_name(tmp, data, out):
    return (select_args(tmp, data, out, select={"target": "words", "variants": {"../x": "first"}}),
            ["field 'select.variants'", "'../x'"])


@case
def config_duplicate_teacher_names(tmp, data, out):
    cfg = replay_config(data)
    cfg["teachers"][1]["replay"]["path"] = cfg["teachers"][0]["replay"]["path"]
    return ["select", write_config(tmp, cfg), "--out", out], ["field 'teachers'", "alpaca-7b"]


# --- prompt files ---------------------------------------------------------------------------

@case
def prompts_missing_file_with_brackets(tmp, data, out):
    return (prompts_args(tmp, data, out, tmp / "data" / "missing[v2].jsonl"),
            [str(tmp / "data" / "missing[v2].jsonl"), "prompt file not found"])


@case
def prompts_not_utf8(tmp, data, out):
    path = tmp / "latin1.jsonl"
    path.write_bytes(b'{"id": "a", "prompt": "fine"}\n{"id": "b", "prompt": "caf\xe9"}\n')
    return prompts_args(tmp, data, out, path), [str(path), "row 2", "not UTF-8"]


@case
def prompts_csv_not_utf8(tmp, data, out):
    path = tmp / "cp1252.csv"
    path.write_bytes("id,prompt\na,na\xefve\n".encode("cp1252"))
    return prompts_args(tmp, data, out, path), [str(path), "not UTF-8"]


@case
def prompts_bad_json_line(tmp, data, out):
    path = tmp / "bad.jsonl"
    path.write_text('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y"}\n{"id": "c", "prompt": \n',
                    encoding="utf-8")
    return prompts_args(tmp, data, out, path), [str(path), "row 3", "not valid JSON"]


@case
def prompts_lone_surrogate(tmp, data, out):
    path = tmp / "surrogate.jsonl"
    path.write_text('{"id": "a", "prompt": "fine"}\n{"id": "b", "prompt": "bad \\ud800 text"}\n', encoding="utf-8")
    return prompts_args(tmp, data, out, path), [str(path), "row 2", "field 'prompt'", "surrogate"]


@case
def prompts_field_with_brackets_missing(tmp, data, out):
    path = jsonl(tmp / "p.jsonl", [{"id": "a", "prompt": "x"}])
    return (prompts_args(tmp, data, out, path, field="prompt[text]"),
            [str(path), "row 1", "field 'prompt[text]'", "missing"])


@case
def prompts_duplicate_id(tmp, data, out):
    path = jsonl(tmp / "p.jsonl", [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}])
    return prompts_args(tmp, data, out, path), [str(path), "row 2", "field 'id'", "duplicate id 'a'"]


@case
def prompts_duplicate_text(tmp, data, out):
    path = jsonl(tmp / "p.jsonl", [{"id": "a", "prompt": "same"}, {"id": "b", "prompt": "other"},
                                   {"id": "c", "prompt": " same "}])
    return prompts_args(tmp, data, out, path), [str(path), "row 3", "field 'prompt'", "same text as row 1"]


@case
def prompts_empty_text(tmp, data, out):
    path = jsonl(tmp / "p.jsonl", [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "   "}])
    return prompts_args(tmp, data, out, path), [str(path), "row 2", "field 'prompt'", "non-empty"]


@case
def prompts_text_not_a_string(tmp, data, out):
    path = jsonl(tmp / "p.jsonl", [{"id": "a", "prompt": 42}])
    return prompts_args(tmp, data, out, path), [str(path), "row 1", "field 'prompt'", "non-empty string"]


@case
def prompts_line_not_an_object(tmp, data, out):
    path = jsonl(tmp / "p.jsonl", [{"id": "a", "prompt": "x"}, ["a", "list"]])
    return prompts_args(tmp, data, out, path), [str(path), "row 2", "JSON object"]


@case
def prompts_json_list_of_non_objects(tmp, data, out):
    path = tmp / "p.json"
    path.write_text('[{"id": "a", "prompt": "x"}, "just text"]', encoding="utf-8")
    return prompts_args(tmp, data, out, path), [str(path), "row 2", "object"]


@case
def prompts_ragged_columns(tmp, data, out):
    path = tmp / "columns.json"
    path.write_text(json.dumps({"id": ["a", "b", "c"], "prompt": ["x", "y"]}), encoding="utf-8")
    return prompts_args(tmp, data, out, path), [str(path), "field 'prompt'", "2 values"]


@case
def prompts_json_scalar(tmp, data, out):
    path = tmp / "p.json"
    path.write_text('"a string"', encoding="utf-8")
    return prompts_args(tmp, data, out, path), [str(path), "expected a list of objects"]


@case
def prompts_json_invalid(tmp, data, out):
    path = tmp / "p.json"
    path.write_text('[{"id": "a", "prompt": "x"},\n{"id": ', encoding="utf-8")
    return prompts_args(tmp, data, out, path), [str(path), "not valid JSON (line 2"]


@case
def prompts_corrupt_parquet(tmp, data, out):
    path = tmp / "p.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "prompt": ["x", "y"]}), path)
    path.write_bytes(path.read_bytes()[:-20])
    return prompts_args(tmp, data, out, path), [str(path), "not a readable Parquet file"]


@case
def prompts_csv_missing_column(tmp, data, out):
    path = tmp / "p.csv"
    path.write_text("id,question\na,x\n", encoding="utf-8")
    return prompts_args(tmp, data, out, path), [str(path), "row 1", "field 'prompt'", "missing"]


@case
def prompts_unsupported_suffix(tmp, data, out):
    path = tmp / "p.txt"
    path.write_text("hello\n", encoding="utf-8")
    return prompts_args(tmp, data, out, path), [str(path), "unsupported prompt file type"]


@case
def prompts_empty_file(tmp, data, out):
    path = tmp / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    return prompts_args(tmp, data, out, path), [str(path), "no prompts found"]


@case
def prompts_eval_source_missing(tmp, data, out):
    good = jsonl(tmp / "p.jsonl", [{"id": "a", "prompt": "x"}])
    return (prompts_args(tmp, data, out, good, eval_source=str(tmp / "eval[1].jsonl")),
            [str(tmp / "eval[1].jsonl"), "not found"])


@case
def prompts_a_directory(tmp, data, out):
    folder = tmp / "folder.jsonl"
    folder.mkdir()
    return prompts_args(tmp, data, out, folder), [str(folder), "prompt file not found"]


# --- replayed teacher outputs -----------------------------------------------------------------

def replay_args(tmp, data, out, path: Path, **replay) -> list[str]:
    cfg = replay_config(data)
    cfg["teachers"][1] = {"backend": "replay", "name": "bad", "replay": {"path": str(path), **replay}}
    return ["select", write_config(tmp, cfg), "--out", out]


def first_instructions(data: Path, n: int = 3) -> list[str]:
    rows = json.loads((data / "alpaca_eval" / "gpt-3.5-turbo-0613.json").read_text(encoding="utf-8"))
    return [r["instruction"] for r in rows[:n]]


@case
def replay_missing_file(tmp, data, out):
    return replay_args(tmp, data, out, tmp / "gone[1].json"), ["field 'teachers.1.replay.path'", "gone[1].json"]


@case
def replay_lone_surrogate(tmp, data, out):
    path = tmp / "outputs.jsonl"
    a, b, _ = first_instructions(data)
    path.write_text(json.dumps({"instruction": a, "output": "ok"}) + "\n"
                    + json.dumps({"instruction": b, "output": "x"}).replace('"x"', '"x \\udc80"') + "\n",
                    encoding="utf-8")
    return replay_args(tmp, data, out, path), [str(path), "row 2", "field 'output'", "surrogate"]


@case
def replay_text_field_missing(tmp, data, out):
    path = jsonl(tmp / "outputs.jsonl", [{"instruction": i, "answer": "x"} for i in first_instructions(data)])
    return replay_args(tmp, data, out, path), [str(path), "row 1", "field 'output'", "missing"]


@case
def replay_text_not_a_string(tmp, data, out):
    a, b, c = first_instructions(data)
    path = jsonl(tmp / "outputs.jsonl", [{"instruction": a, "output": "x"}, {"instruction": b, "output": None}])
    return replay_args(tmp, data, out, path), [str(path), "row 2", "field 'output'", "must be a string"]


@case
def replay_corrupt_parquet(tmp, data, out):
    path = tmp / "outputs.parquet"
    path.write_bytes(b"PAR1 this is not parquet PAR1")
    return replay_args(tmp, data, out, path), [str(path), "not a readable Parquet file"]


@case
def replay_not_utf8(tmp, data, out):
    path = tmp / "outputs.json"
    path.write_bytes(b'[{"instruction": "x", "output": "\xff\xfe"}]')
    return replay_args(tmp, data, out, path), [str(path), "not UTF-8"]


@case
def replay_teacher_field_missing(tmp, data, out):
    path = jsonl(tmp / "outputs.jsonl", [{"instruction": i, "output": "x"} for i in first_instructions(data)])
    return replay_args(tmp, data, out, path, teacher_field="generator"), [str(path), "row 1", "field 'generator'"]


# --- answer files of `heredity judge` (refused before any judge model loads) -------------------

def judge_args(tmp: Path, bad: Path) -> list[str]:
    good = jsonl(tmp / "good.jsonl", [{"prompt": "q1", "answer": "a"}, {"prompt": "q2", "answer": "b"}])
    return ["judge", good, bad, "--out", tmp / "judged"]


@case
def judge_answers_lone_surrogate(tmp, data, out):
    path = tmp / "b.jsonl"
    path.write_text('{"prompt": "q1", "answer": "fine"}\n{"prompt": "q2", "answer": "x \\ud800"}\n', encoding="utf-8")
    return judge_args(tmp, path), [str(path), "row 2", "field 'answer'", "surrogate"]


@case
def judge_answers_not_utf8(tmp, data, out):
    path = tmp / "b.jsonl"
    path.write_bytes(b'{"prompt": "q1", "answer": "\xe9t\xe9"}\n')
    return judge_args(tmp, path), [str(path), "row 1", "not UTF-8"]


@case
def judge_answers_missing(tmp, data, out):
    path = tmp / "answers[b].jsonl"
    return judge_args(tmp, path), [str(path), "answers file not found"]


# --- the run directory ------------------------------------------------------------------------

@case
def out_is_a_regular_file(tmp, data, out):
    path = tmp / "out-file"
    path.write_text("not a folder", encoding="utf-8")
    return select_args(tmp, data, path), [f"--out {path}", "not a directory"]


@case
def out_under_a_regular_file(tmp, data, out):
    path = tmp / "out-file"
    path.write_text("not a folder", encoding="utf-8")
    return select_args(tmp, data, path / "run"), [f"--out {path / 'run'}", "is a file"]


# --- models, device and training: `heredity run` checks them before generating ----------------

@case
def student_missing_folder(tmp, data, out):
    return train_args(tmp, data, out, student=str(tmp / "models" / "student[v2]")), \
        ["field 'student'", "student[v2]", "not found"]


@case
def student_folder_without_weights(tmp, data, out):
    folder = tmp / "student"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    return train_args(tmp, data, out, student=str(folder)), ["field 'student'", "no weights"]


@case
def student_folder_without_config(tmp, data, out):
    folder = tmp / "student"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    return train_args(tmp, data, out, student=str(folder)), ["field 'student'", "no config.json"]


@case
def student_unknown_embedded(tmp, data, out):
    return train_args(tmp, data, out, student="embedded:gpt-7"), ["field 'student'", "unknown embedded model"]


@case
def teacher_model_missing(tmp, data, out):
    cfg = replay_config(data)
    cfg["teachers"][1] = {"model": str(tmp / "nowhere" / "teacher.gguf"), "backend": "llamacpp"}
    return ["select", write_config(tmp, cfg), "--out", out], ["field 'teachers.1.model'", "teacher.gguf", "not found"]


@case
def judge_model_missing(tmp, data, out):
    return (train_args(tmp, data, out, eval={"judge": str(tmp / "judge-model")}),
            ["field 'eval.judge.model'", "judge-model", "not found"])


@case
def training_without_eval_prompts(tmp, data, out):
    return ["run", write_config(tmp, replay_config(data)), "--out", out], ["field 'prompts.eval_every'"]


@case
def bad_lr_scheduler(tmp, data, out):
    return train_args(tmp, data, out, train={"lr_scheduler": "cosine_annealing"}), \
        ["field 'train.lr_scheduler'", "cosine_annealing"]


@case
def lora_target_modules_empty(tmp, data, out):
    return train_args(tmp, data, out, train={"method": "lora", "lora_target_modules": []}), \
        ["field 'train.lora_target_modules'", "empty"]


@case
def lora_target_modules_bad_regex(tmp, data, out):
    return train_args(tmp, data, out, train={"method": "lora", "lora_target_modules": "q_proj["}), \
        ["field 'train.lora_target_modules'", "'q_proj['"]


@case
def lora_target_modules_not_names(tmp, data, out):
    return train_args(tmp, data, out, train={"method": "lora", "lora_target_modules": ["q_proj", "v proj"]}), \
        ["field 'train.lora_target_modules.1'", "'v proj'"]


@case
def lora_target_module_not_in_the_student(tmp, data, out):
    # peft would raise only after generate, score and select: the student's config names its layers
    return train_args(tmp, data, out, train={"method": "lora", "lora_target_modules": ["q_proj", "no_such_proj"]}), \
        ["field 'train.lora_target_modules.1'", "'no_such_proj' names no module of the student", "v_proj"]


@case
def lora_target_module_not_a_layer(tmp, data, out):
    return train_args(tmp, data, out, train={"method": "lora", "lora_target_modules": ["mlp"]}), \
        ["field 'train.lora_target_modules.0'", "'mlp' names a LlamaMLP, which LoRA cannot adapt"]


@case
def lora_target_regex_matches_nothing(tmp, data, out):
    return train_args(tmp, data, out, train={"method": "lora", "lora_target_modules": r".*\.nothing_proj"}), \
        ["field 'train.lora_target_modules'", "matches no module of the student"]


def small_context_student(tmp: Path, context: int = 256) -> Path:
    """The embedded student's tokenizer in a folder whose model has a 256-token context, and no
    real weights: the long-prompt check needs only a few hundred tokens, and a run that got past
    it would fail at once instead of training."""
    from heredity.config import EMBEDDED_MODEL
    from heredity.core.models import resolve

    source = Path(resolve(EMBEDDED_MODEL)["pretrained_model_name_or_path"])
    folder = tmp / "small-student"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copy(source / name, folder / name)
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": context}), encoding="utf-8")
    (folder / "model.safetensors").write_bytes(b"not weights")
    return folder


@case
def prompt_longer_than_student_context(tmp, data, out):
    questions = [f"question {i}" for i in range(4)]
    path = jsonl(tmp / "long.jsonl", [{"id": f"p{i}", "prompt": q} for i, q in enumerate(questions)]
                 + [{"id": "huge[1]", "prompt": "word " * 300}])
    answers = jsonl(tmp / "answers.jsonl", [{"instruction": q, "output": "an answer"} for q in questions])
    cfg = replay_config(data, prompts={"source": str(path), "eval_every": 2},
                        teachers=[{"backend": "replay", "replay": {"path": str(answers)}}],
                        student=str(small_context_student(tmp)), eval={"max_new_tokens": 16})
    return ["run", write_config(tmp, cfg), "--out", out], [str(path), "prompt id 'huge[1]'", "context of 256"]


@case
def cuda_without_gpu(tmp, data, out):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    return train_args(tmp, data, out, device="cuda"), ["field 'device'", "no CUDA GPU"]


@pytest.fixture
def no_work(monkeypatch):
    """A bad input must stop before any work: should a check let one through, the test fails at
    once instead of generating, training or loading a judge (memory and minutes)."""
    import heredity.judging
    import heredity.pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("a bad input got past the checks into real work")

    from heredity.config import EMBEDDED_MODEL
    from heredity.core.models import resolve

    resolve(EMBEDDED_MODEL)  # the first conversion (an empty cache) prints progress lines: not in a case's output
    monkeypatch.setattr(heredity.pipeline, "_run_locked", refuse)
    monkeypatch.setattr(heredity.judging, "pairwise", refuse)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_leaves_a_finished_run_unchanged(name, tmp_path, data_dir, finished_run, no_work):
    finished, before = finished_run
    args, expected = CASES[name](tmp_path, data_dir, finished)  # --out is the finished run itself
    code, output = invoke(*args)
    assert code != 0 and code != 99, output
    assert "Traceback" not in output
    lines = error_lines(output)
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for fragment in expected:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert snapshot(finished) == before


def test_enough_cases():
    assert len(CASES) >= 40


# --- failures that come later, in a run of their own ------------------------------------------

@pytest.mark.parametrize("rule", [
    {"strategy": "threshold", "metric": "words", "op": ">=", "value": 10**9, "then": "first"},
    {"strategy": "constrained", "metric": "ttr", "subject_to": {"metric": "words", "op": ">=", "value": 10**9}},
], ids=["threshold", "constrained"])
def test_empty_selection_is_refused_and_select_stays_unfinished(rule, tmp_path, data_dir, finished_run):
    finished, before = finished_run
    out = tmp_path / "run"
    code, output = invoke(*select_args(tmp_path, data_dir, out, select={"target": "words", "active": rule}))
    lines = error_lines(output)
    assert code == 1 and "Traceback" not in output
    assert lines[-1].startswith("error: select: arm 'active' selected no candidate"), output
    assert rule["strategy"] in lines[-1] and sum(line.startswith("error") for line in lines) == 1
    assert not (out / "select" / "manifest.json").exists()
    assert not (out / "select" / "active.parquet").exists()
    assert (out / "score" / "manifest.json").exists()  # the work before it is kept
    assert snapshot(finished) == before


def test_corrupt_parquet_in_the_run_directory_names_the_file(tmp_path, finished_run):
    finished, before = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    scores = copy / "score" / "scores.parquet"
    scores.write_bytes(scores.read_bytes()[:100])
    (copy / "select" / "manifest.json").unlink()
    cfg = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    code, output = invoke("select", write_config(tmp_path, cfg), "--out", copy)
    lines = error_lines(output)
    assert code == 1 and "Traceback" not in output
    assert lines[-1].startswith(f"error: {scores}: not a readable Parquet file"), output
    assert snapshot(finished) == before


@pytest.mark.parametrize("garbage", [b"\xff\xfe not utf-8", b"[1, 2]", b"{not json", b""])
def test_an_unreadable_manifest_reruns_its_stage(garbage, tmp_path, finished_run):
    finished, before = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    (copy / "score" / "manifest.json").write_bytes(garbage)
    cfg = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    code, output = invoke("select", write_config(tmp_path, cfg), "--out", copy)
    assert code == 0, output
    assert "score done" in output and "select reused" in output
    for name in ("score/scores.parquet", "select/active.parquet", "select/passive.parquet"):
        assert (copy / name).read_bytes() == before[name][0]
    assert snapshot(finished) == before


def test_error_lines_keep_brackets(capsys):
    """Error text is never read as Rich markup: file names, fields and markers print as they are."""
    import typer

    from heredity.cli import _fail

    with pytest.raises(typer.Exit):
        _fail("data/missing[v2].jsonl, field 'prompt[text]': pip install 'heredity[vllm]', key [redacted] [bold]x[/bold]")
    err = capsys.readouterr().err
    assert err.strip() == ("error: data/missing[v2].jsonl, field 'prompt[text]': pip install 'heredity[vllm]', "
                           "key [redacted] [bold]x[/bold]")


def test_csv_header_bom_is_stripped(tmp_path, data_dir):
    from heredity.config import PromptsConfig
    from heredity.core.prompts import load_prompts

    path = tmp_path / "bom.csv"
    path.write_bytes("id,prompt\na,first\nb,second\n".encode("utf-8-sig"))
    train, _ = load_prompts(PromptsConfig(source=str(path), eval_every=None))
    assert [(p.id, p.text) for p in train] == [("a", "first"), ("b", "second")]


def test_credentials_in_base_url_are_never_written(tmp_path, data_dir):
    from heredity.plan import config_from_dict, persisted_config

    cfg = replay_config(data_dir)
    cfg["teachers"].append({"model": "served", "backend": "openai", "name": "api",
                            "openai": {"base_url": "https://user:sk-SECRET@api.example.com/v1?key=sk-SECRET2"}})
    data = json.dumps(persisted_config(config_from_dict(cfg)))
    assert "sk-SECRET" not in data and "https://api.example.com/v1" in data


def test_outputs_respect_the_umask(finished_run):
    import os
    import stat

    finished, _ = finished_run
    mask = os.umask(0o022)
    os.umask(mask)
    for path in [finished / "config.json", finished / "select" / "active.parquet", finished / "select" / "manifest.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path
