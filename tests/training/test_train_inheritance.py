"""The point of the train stage: a student inherits the length of the answers it is trained on.

The whole path up to training is heredity's own: a pool replayed from four real AlpacaEval
teachers (same prompts, answers from about 30 to 1,600 tokens), scored with the `length`
metric, then selected twice from the same pool: the shortest answer per prompt (passive arm,
``best`` on length, min) and the longest (active arm, ``best`` on length, max). Both students
are trained by ``run_train_arms`` with the same settings and steps, then answer 4 held-out
prompts greedily. The max-length student's answers must be longer: when written, about 50
tokens (it learnt to stop) against 96 (the cap: its training answers never end within
max_length).
"""

from __future__ import annotations

import json
import warnings

import pyarrow.parquet as pq
import pytest
from train_helpers import (  # noqa: F401 (one_cpu_thread is an autouse fixture)
    ALPACA,
    STUDENT,
    one_cpu_thread,
)

from heredity.core.models import load_tokenizer
from heredity.core.prompts import Prompt
from heredity.core.rundir import Stage
from heredity.pipeline import run
from heredity.plan import config_from_dict
from heredity.stages.evaluate import answer
from heredity.stages.train import run_train_arms

pytestmark = pytest.mark.slow

TEACHERS = ("alpaca-7b", "falcon-7b-instruct", "gpt-3.5-turbo-0613", "Mixtral-8x7B-Instruct-v0.1_verbose")
MAX_NEW_TOKENS = 96


@pytest.fixture(scope="module")
def prompts(data_dir):
    """8 train and 4 held-out AlpacaEval instructions, short ones (the answers are the point)."""
    path = data_dir / ALPACA / f"{TEACHERS[0]}.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    tokenizer = load_tokenizer(STUDENT)
    short = [it["instruction"] for it in json.loads(path.read_text(encoding="utf-8"))
             if len(tokenizer(it["instruction"])["input_ids"]) <= 20]
    return short[:8], short[8:12]


def test_student_trained_on_longer_answers_answers_longer(tmp_path, data_dir, prompts):
    train, held_out = prompts
    for name, texts in (("train", train), ("eval", held_out)):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"id": f"{name}{i}", "prompt": t}) + "\n" for i, t in enumerate(texts)))
    cfg = config_from_dict({
        "student": STUDENT, "device": "cpu",
        "prompts": {"source": str(tmp_path / "train.jsonl"), "eval_source": str(tmp_path / "eval.jsonl")},
        "teachers": [{"backend": "replay", "replay": {"path": str(data_dir / ALPACA / f"{t}.json")}}
                     for t in TEACHERS],
        "k": 1,
        "score": {"metrics": ["length"]},
        "select": {"target": "length", "direction": "max",
                   "passive": {"strategy": "best", "metric": "length", "direction": "min"}},
        "train": {"epochs": 2, "batch_size": 4, "learning_rate": 2e-4, "max_length": 112},
        "eval": {"max_new_tokens": MAX_NEW_TOKENS},
    })
    out = tmp_path / "run"
    run(cfg, out, until="select")
    selected = {arm: pq.read_table(out / "select" / f"{arm}.parquet").to_pylist() for arm in ("passive", "active")}
    pool = pq.read_table(out / "score" / "scores.parquet").to_pylist()
    assert len(pool) == 4 * len(train)
    for arm, pick in (("passive", min), ("active", max)):  # heredity's selection did the choosing
        assert [r["length"] for r in selected[arm]] == [
            pick(r["length"] for r in pool if r["prompt_id"] == s["prompt_id"]) for s in selected[arm]]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long answers are cut at max_length, by design
        trained = run_train_arms(cfg, out, Stage(out, "select", {}), ["passive", "active"])
    results = {arm: stage.manifest()["result"] for arm, stage in trained.items()}
    assert results["passive"]["steps"] == results["active"]["steps"] == 4
    assert results["passive"]["hyperparameters"] == results["active"]["hyperparameters"]

    held = [Prompt(id=str(i), text=t) for i, t in enumerate(held_out)]
    lengths = {arm: [a["completion_tokens"] for a in answer(str(stage.dir / "model"), held, cfg)]
               for arm, stage in trained.items()}
    mean = {arm: sum(v) / len(v) for arm, v in lengths.items()}
    assert mean["active"] > 1.4 * mean["passive"], lengths
    assert sum(n < MAX_NEW_TOKENS for n in lengths["passive"]) >= 3, lengths  # the min student stops by itself
