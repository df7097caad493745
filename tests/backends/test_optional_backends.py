"""The optional backends: llamacpp on the embedded model's own GGUF file (when
llama-cpp-python is installed) and vllm's request grouping and missing-package error (vLLM
itself needs a GPU)."""

from __future__ import annotations

import sys

import pytest

from heredity.backends import Request, open_backend
from heredity.backends.vllm_backend import group_by_conversation
from heredity.config import SamplingConfig, TeacherConfig
from heredity.core.models import chat_messages, load_model, load_tokenizer
from heredity.errors import HeredityError

MODEL = "embedded:smollm2-135m-instruct"


@pytest.mark.parametrize("backend, package", [("llamacpp", "llama_cpp"), ("vllm", "vllm")])
def test_missing_optional_package_is_one_line_with_the_install_command(monkeypatch, backend, package):
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` fail
    sys.modules.pop(f"heredity.backends.{backend}_backend", None)
    with pytest.raises(HeredityError, match=rf"pip install 'heredity\[{backend}\]'") as err:
        open_backend(TeacherConfig(backend=backend, name="t"), "cuda")
    assert "\n" not in str(err.value) and "teacher 't'" in str(err.value)


def test_vllm_groups_the_samples_of_each_conversation():
    a, b = chat_messages("Name a colour.", None), chat_messages("Name a fruit.", None)
    requests = [Request(a, 1), Request(b, 2), Request(a, 3), Request(chat_messages("Name a colour.", ""), 4)]
    assert group_by_conversation(requests) == [[0, 2], [1], [3]]  # a different system prompt is another conversation


@pytest.fixture(scope="module")
def llamacpp():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is optional (pip install 'heredity[llamacpp]')")
    backend = open_backend(TeacherConfig(backend="llamacpp", llamacpp={"n_threads": 1}), "cpu")
    yield backend
    backend.close()


def test_llamacpp_greedy_agrees_with_transformers(llamacpp):
    from heredity.backends.transformers_backend import generate_batch

    request = Request(chat_messages("What is 2+2?", None), 0)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=24)
    mine = llamacpp.generate([request], greedy)[0]
    reference = generate_batch(load_model(MODEL), load_tokenizer(MODEL), [request], greedy)[0]
    # Same GGUF weights and chat template: the same prompt tokens and the same greedy answer.
    assert mine.prompt_tokens == reference.prompt_tokens
    assert mine.text == reference.text and mine.finish_reason == reference.finish_reason == "stop"


def test_llamacpp_samples_are_seeded_and_capped(llamacpp):
    messages = chat_messages("Write a short poem about rain.", None)
    sampling = SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=10)
    out = llamacpp.generate([Request(messages, s) for s in (7, 8, 7, 9)], sampling)
    assert out[0].text == out[2].text  # same seed, same sample, even with other requests between
    assert len({out[0].text, out[1].text, out[3].text}) == 3
    assert all(c.finish_reason == "length" and c.completion_tokens == 10 for c in out)
