"""Held-out evaluation decoding: greedy by default (stage keys unchanged), or one seeded sample per prompt."""

from __future__ import annotations

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
