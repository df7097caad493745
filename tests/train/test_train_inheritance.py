"""The point of the train stage: a student inherits the length of the answers it is trained on.

Two students are fine-tuned on the same 8 real prompts, one on short real answers (the first
sentence of gpt-3.5-turbo's AlpacaEval answer), one on long real answers (Mixtral's verbose
AlpacaEval answer, cut at max_length). Greedy answers to 4 held-out prompts must be longer
for the second. Small but with a wide margin: about 15 vs 40 tokens (the cap) when written.
"""

from __future__ import annotations

import re
import warnings

import pytest
from train_helpers import (  # noqa: F401 (one_cpu_thread is an autouse fixture)
    STUDENT,
    alpaca,
    one_cpu_thread,
    train_config,
)

from heredity.config import RunConfig
from heredity.evaluate import answer
from heredity.models import load_tokenizer
from heredity.prompts import Prompt
from heredity.train import train_student

pytestmark = pytest.mark.slow

MAX_NEW_TOKENS = 32


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]


@pytest.fixture(scope="module")
def prompt_sets(data_dir):
    tokenizer = load_tokenizer(STUDENT)
    size = lambda text: len(tokenizer(text)["input_ids"])
    short, long = alpaca(data_dir, "gpt-3.5-turbo-0613"), alpaca(data_dir, "Mixtral-8x7B-Instruct-v0.1_verbose")
    triples = []
    for s, v in zip(short, long):
        assert s["instruction"] == v["instruction"]
        sentence = first_sentence(s["output"])
        if size(s["instruction"]) <= 20 and 6 <= size(sentence) <= 25 and size(v["output"]) > 150:
            triples.append((s["instruction"], sentence, v["output"]))
    return triples[:8], [Prompt(id=str(i), text=t[0]) for i, t in enumerate(triples[8:12])]


def test_student_trained_on_longer_answers_answers_longer(tmp_path, prompt_sets):
    train, held_out = prompt_sets
    tc = train_config(epochs=2, batch_size=4, learning_rate=1e-4, max_length=96)
    cfg = RunConfig(student=STUDENT, device="cpu")
    cfg.eval.max_new_tokens = MAX_NEW_TOKENS
    lengths = {}
    for name, column in (("short", 1), ("long", 2)):
        rows = [{"prompt": t[0], "text": t[column]} for t in train]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the long answers are cut at max_length, by design
            train_student(STUDENT, rows, tc, None, "cpu", tmp_path / name, tmp_path / f"{name}-checkpoints")
        answers = answer(str(tmp_path / name), held_out, cfg)
        lengths[name] = [a["completion_tokens"] for a in answers]
    mean = {name: sum(v) / len(v) for name, v in lengths.items()}
    assert mean["long"] > 1.5 * mean["short"], lengths
    assert sum(n < MAX_NEW_TOKENS for n in lengths["short"]) >= 3, lengths  # the short student stops by itself
