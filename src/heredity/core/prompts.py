"""Load prompts: bundled sets, JSONL/JSON/CSV/Parquet files, or Hugging Face datasets."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from heredity.config import PromptsConfig
from heredity.core.data import missing_data_hint
from heredity.errors import HeredityError, input_error


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str


def bundled_names() -> list[str]:
    folder = files("heredity.data.prompts")
    return sorted(p.name.removesuffix(".jsonl") for p in folder.iterdir() if p.name.endswith(".jsonl"))


def _text(path: Path) -> str:
    """A file's text: UTF-8 (a leading BOM dropped); anything else is a one-line error."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HeredityError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise input_error(path, line, None, f"not UTF-8 text (byte {exc.start}: {exc.reason}); "
                                            "save the file as UTF-8") from None


def lone_surrogate(text: str) -> bool:
    """True if ``text`` holds a lone UTF-16 surrogate (JSON's "\\ud800"): not encodable text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_SURROGATE = re.compile("[\ud800-\udfff]")  # in a Python str, a surrogate is always a lone one



def text_field(row: dict[str, Any], field: str, label: str, row_number: int) -> str:
    """``row[field]`` as a text, or a one-line error naming the file, row and field."""
    text = row[field]
    if not isinstance(text, str):
        raise input_error(label, row_number, field, "must be a string")
    if lone_surrogate(text):
        raise input_error(label, row_number, field, "holds a lone surrogate (e.g. \\ud800), which is not valid Unicode")
    return text

def replace_lone_surrogates(text: str) -> str:
    """``text`` with each lone surrogate as U+FFFD, as a UTF-8 decoder reads broken text; other
    text is returned as it is (for model output, which must be stored and tokenised)."""
    return _SURROGATE.sub("\ufffd", text) if lone_surrogate(text) else text


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for lineno, line in enumerate(_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise input_error(path, lineno, None, f"not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise input_error(path, lineno, None, "each line must be a JSON object")
        rows.append(row)
    return rows


def _read_json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise input_error(path, None, None, f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if isinstance(data, dict):  # column orientation: {"col": {"0": v, ...}} or {"col": [v, ...]}
        columns = {k: (list(v.values()) if isinstance(v, dict) else v) for k, v in data.items()}
        if not all(isinstance(v, list) for v in columns.values()):
            raise input_error(path, None, None, "expected a list of objects or a mapping of columns")
        n = len(next(iter(columns.values()), []))
        for name, values in columns.items():
            if len(values) != n:
                raise input_error(path, None, str(name), f"column has {len(values)} values, the first column {n} "
                                                         "(columns must be equally long)")
        return [{k: v[i] for k, v in columns.items()} for i in range(n)]
    if not isinstance(data, list):
        raise input_error(path, None, None, "expected a list of objects")
    return data


def read_rows(source: str, hf_split: str = "train") -> tuple[list[dict[str, Any]], str]:
    """Rows of a prompt source, and a label for error messages."""
    if source.startswith("bundled:"):
        name = source.removeprefix("bundled:")
        resource = files("heredity.data.prompts").joinpath(f"{name}.jsonl")
        if not resource.is_file():
            raise HeredityError(f"no bundled prompt set '{name}'; bundled: {', '.join(bundled_names())}")
        with resource.open("r", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()], source
    if source.startswith("hf:"):
        try:
            import datasets
        except ImportError:
            raise HeredityError("'hf:' prompt sources need the 'datasets' package") from None
        dataset_id = source.removeprefix("hf:")
        local = Path(dataset_id).expanduser()
        try:
            if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():
                # written by save_to_disk, which load_dataset refuses to read
                ds = datasets.load_from_disk(str(local))
                if isinstance(ds, datasets.DatasetDict):
                    if hf_split not in ds:
                        raise HeredityError(f"{local}: no split '{hf_split}' (splits: {', '.join(ds)})")
                    ds = ds[hf_split]
            else:
                ds = datasets.load_dataset(dataset_id, split=hf_split)
        except HeredityError:
            raise
        except Exception as exc:  # hub errors come in many types
            raise HeredityError(f"cannot load dataset '{dataset_id}' split '{hf_split}': {exc}") from None
        return [dict(r) for r in ds], source
    path = Path(source).expanduser()
    if not path.is_file():
        raise HeredityError(f"{path}: prompt file not found{missing_data_hint(path)}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path), str(path)
    if suffix == ".json":
        return _read_json(path), str(path)
    if suffix == ".csv":
        try:
            return list(csv.DictReader(io.StringIO(_text(path), newline=""))), str(path)
        except csv.Error as exc:
            raise input_error(path, None, None, f"not valid CSV ({exc})") from None
    if suffix == ".parquet":
        from heredity.core.rundir import read_table

        return read_table(path), str(path)
    raise HeredityError(f"{path}: unsupported prompt file type '{suffix}' (use .jsonl, .json, .csv or .parquet)")


def to_prompts(rows: list[dict[str, Any]], label: str, field: str, id_field: str | None) -> list[Prompt]:
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    texts: dict[str, int] = {}
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise input_error(label, i, None, "each row must be an object (a mapping of fields)")
        if field not in row:
            raise input_error(label, i, field, f"missing (columns: {', '.join(map(str, row))})")
        text = row[field]
        if not isinstance(text, str) or not text.strip():
            raise input_error(label, i, field, "must be a non-empty string")
        if lone_surrogate(text):
            raise input_error(label, i, field, "holds a lone surrogate (e.g. \\ud800), which is not valid Unicode")
        if id_field and id_field in row and row[id_field] not in (None, ""):
            pid = str(row[id_field])
        else:
            pid = f"row-{i}"
        if pid in seen:
            raise input_error(label, i, id_field, f"duplicate id '{pid}' (first at row {seen[pid]})")
        seen[pid] = i
        if (first := texts.get(text.strip())) is not None:
            # candidates are matched to prompts by text: two ids with one text cannot both be kept
            raise input_error(label, i, field, f"same text as row {first}; remove one of the two "
                                               "(each prompt's text must be unique)")
        texts[text.strip()] = i
        prompts.append(Prompt(id=pid, text=text.strip()))
    if not prompts:
        raise HeredityError(f"{label}: no prompts found")
    return prompts


def load_prompts(cfg: PromptsConfig) -> tuple[list[Prompt], list[Prompt]]:
    """Return (train, eval) prompts."""
    rows, label = read_rows(cfg.source, cfg.hf_split)
    prompts = to_prompts(rows, label, cfg.field, cfg.id_field)
    if cfg.eval_source:
        eval_rows, eval_label = read_rows(cfg.eval_source, cfg.hf_split)
        train, held_out = prompts, to_prompts(eval_rows, eval_label, cfg.field, cfg.id_field)
    elif cfg.eval_every is None:
        train, held_out = prompts, []
    else:
        # Position-based split: deterministic and stable when prompts are appended.
        held_out = [p for i, p in enumerate(prompts) if i % cfg.eval_every == cfg.eval_every - 1]
        train = [p for i, p in enumerate(prompts) if i % cfg.eval_every != cfg.eval_every - 1]
    if cfg.limit_train:
        train = train[: cfg.limit_train]
    held_out = held_out[cfg.eval_offset:]
    if cfg.limit_eval:
        held_out = held_out[: cfg.limit_eval]
    if not train:
        raise HeredityError(f"{label}: no train prompts left after the eval split")
    if not held_out and (cfg.eval_every is not None or cfg.eval_source):
        raise HeredityError(f"{label}: no eval prompts left after the split")
    return train, held_out
