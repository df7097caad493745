"""Held-out evaluation decoding: greedy by default (stage keys unchanged), or one seeded sample per prompt."""

from __future__ import annotations

import pytest

from heredity.core.prompts import Prompt
from heredity.plan import config_from_dict
from heredity.stages.evaluate import answer, eval_key
from conftest import tiny_config

PROMPTS = [Prompt("a", "Name three colours."), Prompt("b", "Why is the sky blue? Answer briefly."),
           Prompt("c", "Write a haiku about rain.")]


def test_greedy_key_has_no_sampling_fields():
    # Runs made before evaluation could sample must keep their evaluate keys (and so be reused).
    cfg = config_from_dict(tiny_config())
    assert set(eval_key(cfg)) == {"max_new_tokens", "metrics"}
    sampled = config_from_dict(tiny_config(eval={"max_new_tokens": 24, "temperature": 0.7, "top_p": 0.9}))
    assert eval_key(sampled)["temperature"] == 0.7 and eval_key(sampled)["seed"] == 0
    penalised = config_from_dict(tiny_config(eval={"max_new_tokens": 24, "repetition_penalty": 1.2}))
    assert eval_key(penalised)["repetition_penalty"] == 1.2


def test_sampled_answers_are_seeded_per_prompt_not_per_batch():
    seed = 0
    def run(batch_size, seed):
        cfg = config_from_dict(tiny_config(eval={"max_new_tokens": 12, "temperature": 1.0, "seed": seed,
                                                 "batch_size": batch_size}))
        return [r["text"] for r in answer(cfg.student, PROMPTS, cfg)]

    together, alone = run(3, seed), run(1, seed)
    assert together == alone  # a prompt's sample does not depend on its neighbours
    assert run(3, seed + 100) != together  # and the seed is used


def test_a_changed_metric_rescores_the_answers_and_generates_nothing(tmp_path, monkeypatch, alpaca_texts):
    from heredity.core.rundir import read_table, write_json
    from heredity.metrics.lexical import mtld
    from heredity.stages import evaluate

    answers = [{"prompt_id": p.id, "prompt": p.text, "text": text, "finish_reason": "stop", "completion_tokens": 9}
               for p, text in zip(PROMPTS, alpaca_texts)]
    before = config_from_dict(tiny_config(score={"metrics": ["words"]}, select={"target": "words"}))
    stage, _ = evaluate.evaluate_stage(before, tmp_path, "base", PROMPTS, None)
    stage.start()
    evaluate.finish_evaluate(before, stage, "base", [dict(a) for a in answers])

    def no_generation(*args, **kwargs):
        raise AssertionError("answers were generated again")

    # as if generating the answers had taken 20 minutes
    write_json(stage.manifest_path, {**stage.manifest(), "seconds": 1200.0})
    monkeypatch.setattr(evaluate, "answer", no_generation)
    after = config_from_dict(tiny_config(score={"metrics": ["words", "mtld"]}, select={"target": "words"}))
    rescored = evaluate.run_evaluate(after, tmp_path, "base", PROMPTS, None)
    assert not rescored.reused and rescored.is_done() and rescored.key != stage.key
    # the compute behind the outputs: the earlier stage's seconds plus the re-scoring
    manifest = rescored.manifest()
    assert manifest["rescored"] is True and 1200.0 < manifest["seconds"] < 1260.0
    rows = read_table(rescored.dir / "answers.parquet")
    assert [r["text"] for r in rows] == [a["text"] for a in answers]
    assert [r["mtld"] for r in rows] == pytest.approx([mtld(a["text"]) for a in answers])
    assert set(rows[0]) == {*answers[0], "arm", "words", "mtld"}
    # a dropped metric leaves no stale column behind
    dropped = config_from_dict(tiny_config(score={"metrics": ["mtld"]}, select={"target": "mtld"}))
    assert "words" not in read_table(evaluate.run_evaluate(dropped, tmp_path, "base", PROMPTS, None).dir
                                     / "answers.parquet")[0]
    # other decoding settings change the answers: those are generated again
    longer = config_from_dict(tiny_config(score={"metrics": ["mtld"]}, select={"target": "mtld"},
                                          eval={"max_new_tokens": 48, "bootstrap_samples": 200}))
    try:
        evaluate.run_evaluate(longer, tmp_path, "base", PROMPTS, None)
    except AssertionError as exc:
        assert "generated again" in str(exc)
    else:
        raise AssertionError("a new max_new_tokens reused the old answers")


def test_a_trained_arm_without_its_weights_keeps_its_evaluation_and_names_what_is_missing(tmp_path, alpaca_texts):
    # Weights deleted to save disk (or a run folder moved without them): the finished evaluation is
    # still reused; only a new one needs the model, and it stops before starting with a clear error.
    from heredity.core.rundir import Stage
    from heredity.errors import HeredityError
    from heredity.stages import evaluate

    trained = Stage(tmp_path, "train/active", {"seed": 0})
    trained.start()
    trained.finish({"model": "model"})
    assert not (trained.dir / "model").exists()
    cfg = config_from_dict(tiny_config(score={"metrics": ["words"]}, select={"target": "words"}))
    stage, _ = evaluate.evaluate_stage(cfg, tmp_path, "active", PROMPTS, trained)
    stage.start()
    evaluate.finish_evaluate(cfg, stage, "active", [
        {"prompt_id": p.id, "prompt": p.text, "text": text, "finish_reason": "stop", "completion_tokens": 9}
        for p, text in zip(PROMPTS, alpaca_texts)])
    assert evaluate.run_evaluate(cfg, tmp_path, "active", PROMPTS, trained).reused

    longer = config_from_dict(tiny_config(score={"metrics": ["words"]}, select={"target": "words"},
                                          eval={"max_new_tokens": 13}))
    with pytest.raises(HeredityError) as caught:
        evaluate.run_evaluate(longer, tmp_path, "active", PROMPTS, trained)
    message = str(caught.value)
    assert "\n" not in message and "weights of train/active are missing" in message
    assert str(trained.dir / "model") in message and f"delete {trained.dir}" in message
    assert (tmp_path / "evaluate" / "active" / "answers.parquet").exists()  # the finished answers stay
