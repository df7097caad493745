"""Answers to judge: AlpacaEval answer pairs for the judge-preference profile, and two sides'
answers (files, ``evaluate/<arm>`` folders, ``RUN_DIR:ARM``) matched by prompt for ``pairwise``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from heredity.core.data import data_file
from heredity.core.prompts import lone_surrogate, read_rows
from heredity.errors import HeredityError, input_error
from heredity.judging.verdicts import Pair


def alpaca_eval_pairs(data_dir: Path | None = None, n: int = 100, models: Sequence[str] | None = None,
                      seed: int = 0) -> list[Pair]:
    """``n`` answer pairs from ``alpaca_eval/`` (one JSON file per model, the same 805 instructions).

    A seeded sample of ``n`` distinct instructions; each gets one pair of distinct models, taken in
    turn from a shuffled list of all model pairs (so every model appears about equally often),
    in a random A/B orientation. ``models``: file stems to use (default: every file).
    """
    folder = data_file(data_dir, "alpaca_eval")
    files = sorted(folder.glob("*.json"))
    if models is not None:
        wanted = list(models)
        by_stem = {f.stem: f for f in files}
        unknown = [m for m in wanted if m not in by_stem]
        if unknown:
            raise HeredityError(f"{folder}: no answers for {', '.join(unknown)}; have: {', '.join(sorted(by_stem))}")
        files = [by_stem[m] for m in wanted]
    if len(files) < 2:
        raise HeredityError(f"{folder}: need answers of at least two models, found {len(files)}")
    answers: dict[str, list[dict[str, Any]]] = {}
    for f in files:
        data = json.loads(f.read_text(encoding="utf-8"))
        for i, row in enumerate(data, start=1):
            for field in ("instruction", "output"):
                if not isinstance(row.get(field), str):
                    raise input_error(f, i, field, "must be a string")
        answers[f.stem] = data
    names = list(answers)
    ref = answers[names[0]]
    for m in names[1:]:
        if len(answers[m]) != len(ref):
            raise HeredityError(f"{folder / (m + '.json')}: {len(answers[m])} rows, {names[0]} has {len(ref)}")
        for i, (x, y) in enumerate(zip(ref, answers[m]), start=1):
            if x["instruction"] != y["instruction"]:
                raise input_error(folder / f"{m}.json", i, "instruction", f"differs from {names[0]}'s row {i}")
    if n < 1:
        raise HeredityError(f"alpaca_eval_pairs: n must be at least 1, got {n}")
    n = min(n, len(ref))
    rng = np.random.default_rng(seed)
    items = np.sort(rng.choice(len(ref), size=n, replace=False))
    combos = [(x, y) for k, x in enumerate(names) for y in names[k + 1:]]
    order = rng.permutation(len(combos))
    flips = rng.random(n) < 0.5
    pairs = []
    for j, item in enumerate(items):
        x, y = combos[order[j % len(combos)]]
        if flips[j]:
            x, y = y, x
        pairs.append(Pair(pair_id=f"{int(item)}:{x}:{y}", instruction=ref[item]["instruction"],
                          answer_a=answers[x][item]["output"], answer_b=answers[y][item]["output"],
                          model_a=x, model_b=y))
    return pairs


PROMPT_FIELDS = ("prompt", "instruction")
ANSWER_FIELDS = ("text", "answer", "output", "response")


def load_answers(source: str | Path, prompt_field: str | None = None,
                 answer_field: str | None = None) -> tuple[list[tuple[str, str]], str]:
    """(prompt, answer) rows of a JSON/JSONL/CSV/Parquet file, a folder with ``answers.parquet``
    (``evaluate/<arm>``), or ``RUN_DIR:ARM``; and a label (the arm, the generator or the file stem)."""
    path = Path(source)
    label = path.stem
    if not path.exists() and ":" in str(source):
        run_dir, _, arm = str(source).rpartition(":")
        candidate = Path(run_dir) / "evaluate" / arm / "answers.parquet"
        if candidate.is_file():
            path, label = candidate, arm
    if path.is_dir():
        if not (path / "answers.parquet").is_file():
            raise HeredityError(f"{path}: no answers.parquet in this folder")
        path, label = path / "answers.parquet", path.name
    if not path.exists():
        raise HeredityError(f"{source}: answers file not found")
    rows, where = read_rows(str(path))
    if not rows:
        raise HeredityError(f"{where}: no rows")
    columns = set(rows[0])
    pf = prompt_field or next((f for f in PROMPT_FIELDS if f in columns), None)
    af = answer_field or next((f for f in ANSWER_FIELDS if f in columns), None)
    if pf is None or af is None:
        missing = "prompt (or instruction)" if pf is None else "answer (text, answer, output or response)"
        raise input_error(where, 1, None, f"no {missing} column; columns: {', '.join(map(str, rows[0]))}")
    out: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows, start=1):
        for field in (pf, af):
            if not isinstance(row.get(field), str):
                raise input_error(where, i, field, "missing or not a string")
            if lone_surrogate(row[field]):
                raise input_error(where, i, field, "holds a lone surrogate (e.g. \\ud800), which is not valid Unicode")
        prompt = row[pf].strip()
        if not prompt:
            raise input_error(where, i, pf, "empty prompt")
        if prompt in seen:
            raise input_error(where, i, pf, f"the same prompt as row {seen[prompt]}")
        seen[prompt] = i
        out.append((prompt, row[af]))
    generators = {row.get("generator") for row in rows}
    if len(generators) == 1 and isinstance(next(iter(generators)), str) and path.name != "answers.parquet":
        label = next(iter(generators))
    return out, label


def pair_answers(a: Sequence[tuple[str, str]], b: Sequence[tuple[str, str]], label_a: str, label_b: str,
                 limit: int | None = None) -> list[Pair]:
    """Pairs for the prompts both sides answered (matched by prompt text), in A's order."""
    b_by_prompt = dict(b)
    shared = [(p, ans) for p, ans in a if p in b_by_prompt]
    if not shared:
        raise HeredityError(f"judge: '{label_a}' and '{label_b}' answered no prompt in common")
    if limit is not None:
        shared = shared[:limit]
    if label_a == label_b:
        label_b = label_b + " (B)"
    return [Pair(f"{i}", p, ans, b_by_prompt[p], label_a, label_b) for i, (p, ans) in enumerate(shared)]
