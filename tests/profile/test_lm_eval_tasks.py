"""lm-evaluation-harness tasks through heredity, on a local copy of HellaSwag, and a cross-check
of heredity's batched log-likelihood scorer against the harness's own numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from heredity.core.loglik import TokenSequence, score_groups
from heredity.core.models import load_model
from heredity.core.stats import bootstrap_mean_ci
from heredity.errors import HeredityError
from heredity.profile import scoring_tokenizer
from heredity.profile.lm_eval_tasks import run_lm_eval

pytest.importorskip("lm_eval", reason="lm-evaluation-harness is optional (pip install 'heredity[lm-eval]')")

MODEL = "embedded:smollm2-135m-instruct"
LIMIT = 6


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory, data_dir):
    """A harness task over the shared HellaSwag file: the hub is not reachable here."""
    folder = tmp_path_factory.mktemp("tasks")
    source = data_dir / "hellaswag" / "hellaswag_val.jsonl"
    (folder / "hellaswag_local.yaml").write_text(
        "task: hellaswag_local\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    validation: {json.dumps(str(source))}\n"
        "validation_split: validation\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{ctx}}"\ndoc_to_target: "{{label}}"\ndoc_to_choice: "{{endings}}"\n'
        'target_delimiter: " "\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return folder


@pytest.fixture(scope="module")
def result(task_dir):
    return run_lm_eval(MODEL, ["hellaswag_local"], limit=LIMIT, include_path=task_dir, log_samples=True)


def test_task_metrics_with_intervals(result):
    task = result["tasks"]["hellaswag_local"]
    samples = result["samples"]["hellaswag_local"]
    assert task["n"] == LIMIT == len(samples)
    acc = task["metrics"]["acc"]
    assert acc["value"] == pytest.approx(sum(s["acc"] for s in samples) / LIMIT)
    # accuracy is a mean over documents: a percentile bootstrap over them, as every heredity figure
    per_doc = task["per_doc"]["acc"]
    assert per_doc == {str(s["doc_id"]): float(s["acc"]) for s in samples}
    assert acc["ci_method"] == "bootstrap"
    assert acc["ci95"] == list(bootstrap_mean_ci(np.array(list(per_doc.values())), 1000, 0))
    lo, hi = acc["ci95"]
    assert lo <= acc["value"] <= hi and lo < hi
    assert result["protocol"]["chat_template"] is False and "lm_eval" in result["versions"]


def test_heredity_batched_loglik_matches_the_harness(result):
    """The same (context, continuation) token splits scored by heredity's shared-prefix batched
    scorer give the harness's log-likelihoods (no start token here, as the harness does)."""
    tokenizer = scoring_tokenizer(MODEL)
    model = load_model(MODEL)
    groups, expected = [], []
    for sample in result["samples"]["hellaswag_local"]:
        group = []
        for (context, continuation), response in zip(sample["arguments"], sample["resps"]):
            ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
            whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
            group.append(TokenSequence(tuple(whole), len(ctx)))
            expected.append(response[0][0])
        groups.append(group)
    mine = [ll.total for g in score_groups(model, groups, batch_size=8) for ll in g]
    assert len(mine) == len(expected) == 4 * LIMIT
    assert mine == pytest.approx(expected, abs=2e-3)


def test_two_models_results_pair_by_document(result, tmp_path):
    """Inside a run, harness accuracies of two models are compared document by document."""
    from heredity.core.rundir import write_json
    from heredity.profile.differences import _difference, _per_prompt

    other = json.loads(json.dumps({k: v for k, v in result.items() if k != "samples"}))
    docs = other["tasks"]["hellaswag_local"]["per_doc"]["acc"]
    first = sorted(docs)[0]
    docs[first] = 1.0 - docs[first]  # the other model flips one answer
    for name, r in (("a", result), ("b", other)):
        (tmp_path / name).mkdir()
        write_json(tmp_path / name / "lm_eval.json", {k: v for k, v in r.items() if k != "samples"})
    pa = _per_prompt(tmp_path / "a", {})["lm_eval:hellaswag_local/acc"]
    pb = _per_prompt(tmp_path / "b", {})["lm_eval:hellaswag_local/acc"]
    d = _difference(pa, pb, "a", "b", 500)
    original = result["tasks"]["hellaswag_local"]["per_doc"]["acc"][first]
    assert d["diff"] == pytest.approx((original - docs[first]) / LIMIT) and d["n"] == LIMIT


def test_unknown_task_and_missing_folder_are_one_line_errors(tmp_path):
    with pytest.raises(HeredityError, match="unknown lm-eval task"):
        run_lm_eval(MODEL, ["no_such_task_anywhere"], include_path=tmp_path)
    with pytest.raises(HeredityError, match="task folder not found"):
        run_lm_eval(MODEL, ["hellaswag"], include_path=tmp_path / "missing")
