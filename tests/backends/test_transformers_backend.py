"""The transformers backend on the embedded model (real weights, CPU)."""

import pytest

from heredity.backends import Request
from heredity.backends.transformers_backend import generate_batch
from heredity.config import SamplingConfig
from heredity.core.models import chat_messages, load_model, load_tokenizer

MODEL = "embedded:smollm2-135m-instruct"


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return load_model(MODEL), load_tokenizer(MODEL)


def test_samples_do_not_depend_on_batch_neighbours(model_and_tokenizer):
    model, tok = model_and_tokenizer
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=12)
    a = Request(chat_messages("Name a colour.", None), seed=11)
    b = Request(chat_messages("Write a very long story about the sea and its creatures.", None), seed=12)
    c = Request(chat_messages("Name a colour.", None), seed=13)
    together = generate_batch(model, tok, [a, b, c], sampling)
    alone = generate_batch(model, tok, [a], sampling)
    assert together[0].text == alone[0].text
    assert together[0].completion_tokens == alone[0].completion_tokens
    # same prompt, another seed: a different sample (12 free tokens at T=1 almost never coincide)
    assert together[0].text != together[2].text


def test_greedy_and_finish_reasons(model_and_tokenizer):
    model, tok = model_and_tokenizer
    req = Request(chat_messages("Write a long essay about the history of bread.", None), seed=0)
    short = generate_batch(model, tok, [req], SamplingConfig(temperature=0.0, max_new_tokens=8))[0]
    assert short.finish_reason == "length" and short.completion_tokens == 8
    again = generate_batch(model, tok, [req, req], SamplingConfig(temperature=0.0, max_new_tokens=8))
    assert again[0].text == again[1].text == short.text
    done = generate_batch(model, tok, [Request(chat_messages("Say only the word yes.", ""), 0)],
                          SamplingConfig(temperature=0.0, max_new_tokens=64))[0]
    assert done.finish_reason == "stop" and 0 < done.completion_tokens < 64


def distinct_2(text: str) -> float:
    words = text.split()
    pairs = list(zip(words, words[1:]))
    return len(set(pairs)) / len(pairs)


def test_repetition_penalty_breaks_a_greedy_loop(model_and_tokenizer):
    # Greedy SmolLM2-135M repeats itself on this prompt; the penalty (CTRL's, applied by
    # transformers before the sampler) makes it write something else, and 1.0 changes nothing.
    model, tok = model_and_tokenizer
    req = Request(chat_messages("List the days of the week, over and over.", None), seed=0)
    def decode(penalty):
        return generate_batch(model, tok, [req], SamplingConfig(temperature=0.0, max_new_tokens=96,
                                                                repetition_penalty=penalty))[0].text
    plain, off, penalised = decode(1.0), generate_batch(model, tok, [req], SamplingConfig(
        temperature=0.0, max_new_tokens=96))[0].text, decode(1.3)
    assert plain == off
    assert distinct_2(penalised) > distinct_2(plain) + 0.2
