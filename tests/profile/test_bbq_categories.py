"""BBQ reads the categories present in its data folder (or the ones named), and reports each.

Folders are built in tmp_path from the real category files (a category made by copying the rows
of a real one under a new name, its ``category`` field changed); scoring uses synthetic answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from heredity.errors import HeredityError
from heredity.profile import bbq


def make_folder(tmp_path: Path, data_dir: Path, layout: dict[str, str], rows: int = 60) -> Path:
    """``layout``: new category -> real category file whose first ``rows`` rows it copies."""
    folder = tmp_path / "bbq"
    folder.mkdir(parents=True)
    for name, source in layout.items():
        with open(data_dir / "bbq" / f"{source}.jsonl", encoding="utf-8") as fh:
            picked = [json.loads(line) for _, line in zip(range(rows), fh)]
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for row in picked:
                fh.write(json.dumps({**row, "category": name}) + "\n")
    return tmp_path


def synthetic_run(root: Path, categories=None, limit=None):
    """bbq's run with a model that always picks answer 0 (the scoring after the log-likelihoods)."""
    data = bbq.load(root, categories)
    picked = bbq._draw(data, limit, 0)
    items = [data[c][i] for c, i in picked]
    pred = np.zeros(len(items), int)
    out = bbq.score(pred, [r["label"] for r in items], [bbq.unknown_answer(r) for r in items],
                    [b if (b := bbq.biased_answer(r)) is not None else -1 for r in items],
                    [r["context_condition"] == "ambig" for r in items], [c for c, _ in picked], samples=20)
    return data, picked, items, out


def test_the_eleven_categories():
    assert len(bbq.ALL_CATEGORIES) == 11
    assert {"Gender_identity", "Race_x_SES", "Race_x_gender", "Religion", "SES", "Sexual_orientation",
            "Race_ethnicity"} < set(bbq.ALL_CATEGORIES)


def test_a_folder_profiles_exactly_the_categories_it_holds(tmp_path, data_dir):
    root = make_folder(tmp_path, data_dir, {"Religion": "Age", "SES": "Nationality", "Age": "Age"})
    assert bbq.available_categories(root) == ["Age", "Religion", "SES"]  # the benchmark's order
    data, picked, items, out = synthetic_run(root)
    assert list(data) == ["Age", "Religion", "SES"]
    assert set(out["groups"]) == {"Age", "Religion", "SES"}
    assert {r["category"] for r in items} == {"Age", "Religion", "SES"}
    # the real shared folder: its four categories, nothing hard-coded
    assert bbq.available_categories(data_dir) == sorted(p.stem for p in (data_dir / "bbq").glob("*.jsonl"))


def test_named_categories_only_and_limit_split_over_them(tmp_path, data_dir):
    root = make_folder(tmp_path, data_dir, {"Religion": "Age", "SES": "Nationality", "Age": "Age"})
    data, picked, _, out = synthetic_run(root, ["SES", "Religion"], limit=11)
    assert list(data) == ["SES", "Religion"]
    counts = {c: sum(1 for p in picked if p[0] == c) for c in data}
    assert counts == {"SES": 6, "Religion": 5}
    assert {g: out["groups"][g]["n"] for g in out["groups"]} == counts


def test_missing_category_error_names_folder_and_category(tmp_path, data_dir):
    root = make_folder(tmp_path, data_dir, {"Age": "Age"})
    with pytest.raises(HeredityError) as err:
        bbq.load(root, ["Age", "Religion"])
    message = str(err.value)
    assert str(tmp_path / "bbq") in message and "Religion" in message and "Religion.jsonl" in message
    assert "Age.jsonl" not in message.split("present")[0]  # only what is missing is named as missing
    with pytest.raises(HeredityError, match="no category files"):
        bbq.load(tmp_path / "empty", use_hub=False)


def test_per_category_n_counts_each_context_condition(tmp_path, data_dir):
    # Age's rows alternate ambig / disambig; take an odd count so the two conditions differ
    root = make_folder(tmp_path, data_dir, {"Age": "Age", "Religion": "Age"}, rows=7)
    data, picked, items, out = synthetic_run(root)
    amb = sum(r["context_condition"] == "ambig" for r in data["Religion"])
    assert amb != len(data["Religion"]) - amb
    for cat in ("Age", "Religion"):
        m = out["groups"][cat]["metrics"]
        assert out["groups"][cat]["n"] == 7
        assert m["accuracy"].get("n", 7) == 7
        assert m["accuracy_ambig"]["n"] == m["bias_ambig"]["n"] == amb
        assert m["accuracy_disambig"]["n"] == m["bias_disambig"]["n"] == 7 - amb
    assert out["metrics"]["accuracy_ambig"]["n"] == 2 * amb
