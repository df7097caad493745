"""The batched log-likelihood scorer against one-at-a-time scoring, on the embedded model and real items."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from heredity.core import loglik
from heredity.core.models import load_model
from heredity.profile import bbq, scoring_tokenizer

MODEL = "embedded:smollm2-135m-instruct"
# float32 sums over a batch differ from one-at-a-time sums by a few 1e-6 per token, more with
# fewer threads (other reduction order): 1e-5 per token, for continuations of up to ~30 tokens
TOLERANCE = 3e-4


@pytest.fixture(scope="module")
def model_and_tokenizer():
    # One thread: on a CI machine whose 2 cores are shared with other jobs, torch's default of
    # one thread per core runs several times slower (the threads wait on each other).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model(MODEL), scoring_tokenizer(MODEL)
    torch.set_num_threads(threads)


def tokens(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_continuation_is_the_token_difference(model_and_tokenizer):
    _, tok = model_and_tokenizer
    context, ending = "Roof shingle removal: A man is sitting on a roof. he", " is ripping level tiles off."
    seq = loglik.encode_continuation(tok, context, ending)
    assert seq.ids[0] == tok.bos_token_id  # the start token
    assert list(seq.ids[1:]) == tokens(tok, context + ending)
    assert list(seq.ids[seq.start :]) == tokens(tok, context + ending)[len(tokens(tok, context)) :]
    # a trailing space of the context is scored with the continuation, as BPE attaches it there
    assert loglik.encode_continuation(tok, "Answer: ", "yes") == loglik.encode_continuation(tok, "Answer:", " yes")
    # a merge across the boundary still leaves one scored token
    merged = loglik.encode_continuation(tok, "hello wor", "ld")
    assert list(merged.ids[1:]) == tokens(tok, "hello world") and merged.start == len(merged.ids) - 1
    sentence = loglik.encode_sentence(tok, "The poet can rhyme")
    assert sentence.start == 1 and list(sentence.ids[1:]) == tokens(tok, "The poet can rhyme")
    with pytest.raises(ValueError):
        loglik.encode_continuation(tok, "context", "  ")


def real_groups(tok, data_dir) -> list[list[loglik.TokenSequence]]:
    """A few real items of every suite, as the suites group them."""
    with open(data_dir / "hellaswag" / "hellaswag_val.jsonl", encoding="utf-8") as fh:
        hellaswag = [json.loads(next(fh)) for _ in range(3)]
    with open(data_dir / "crows_pairs" / "crows_pairs_anonymized.csv", encoding="utf-8", newline="") as fh:
        crows = [row for _, row in zip(range(2), csv.DictReader(fh))]
    stereo = json.loads((data_dir / "stereoset" / "stereoset_intrasentence_799.json").read_text(encoding="utf-8"))[:2]
    with open(data_dir / "bbq" / "Age.jsonl", encoding="utf-8") as fh:
        bbq_rows = [json.loads(next(fh)) for _ in range(2)]
    groups = [loglik.encode_continuations(tok, [(r["ctx"], " " + e) for e in r["endings"]]) for r in hellaswag]
    groups += [loglik.encode_continuations(tok, [(bbq.prompt(r), " " + r[f"ans{k}"]) for k in range(3)]) for r in bbq_rows]
    groups += [loglik.encode_sentences(tok, [r["sent_more"], r["sent_less"]]) for r in crows]
    groups += [loglik.encode_sentences(tok, [r["data"][k]["sentence"] for k in ("stereotype", "anti-stereotype", "unrelated")])
               for r in stereo]
    # one member a token prefix of another, and a group of one
    groups.append(loglik.encode_sentences(tok, ["The cat sat.", "The cat sat. Then it slept on the mat."]))
    groups.append(loglik.encode_sentences(tok, ["A single sentence."]))
    return groups


@pytest.fixture(scope="module")
def groups_and_reference(model_and_tokenizer, data_dir):
    model, tok = model_and_tokenizer
    groups = real_groups(tok, data_dir)
    return groups, loglik.score_one_by_one(model, [s for g in groups for s in g])


@pytest.mark.parametrize("share_prefix", [True, False])
def test_batched_equals_one_at_a_time(model_and_tokenizer, groups_and_reference, share_prefix):
    model, _ = model_and_tokenizer
    groups, reference = groups_and_reference
    # a small batch size: several batches, and groups of different sizes packed together
    batched = loglik.score_groups(model, groups, batch_size=7, share_prefix=share_prefix)
    assert [len(g) for g in batched] == [len(g) for g in groups]
    flat = [x for g in batched for x in g]
    for got, want in zip(flat, reference):
        assert got.n_tokens == want.n_tokens
        assert got.total == pytest.approx(want.total, abs=TOLERANCE)
        assert got.total < 0
    # the HellaSwag item 0 ending has the log-likelihood of its tokens, whatever its batch neighbours
    alone = loglik.score_groups(model, groups[:1], share_prefix=share_prefix)[0]
    assert [x.total for x in alone] == pytest.approx([x.total for x in batched[0]], abs=TOLERANCE)


def test_groups_of_one(model_and_tokenizer):
    # a lone sequence shares all but its last token with itself: no suffix position is scored
    model, tok = model_and_tokenizer
    seqs = loglik.encode_sentences(tok, ["One sentence alone.", "Another, a little longer, alone."])
    got = loglik.score_groups(model, [[s] for s in seqs])
    assert [g[0].total for g in got] == pytest.approx([x.total for x in loglik.score_one_by_one(model, seqs)], abs=TOLERANCE)
    with pytest.raises(ValueError):
        loglik.score_groups(model, [[]])


def test_text_helpers_match_the_sequences(model_and_tokenizer):
    model, tok = model_and_tokenizer
    items = [("Context: It rained.\nQuestion: Was it wet?\nAnswer:", [" Yes", " No", " Can't tell"])]
    got = loglik.score_choices(model, tok, items)[0]
    want = loglik.score_one_by_one(model, loglik.encode_continuations(tok, [(items[0][0], o) for o in items[0][1]]))
    assert [g.total for g in got] == pytest.approx([w.total for w in want], abs=TOLERANCE)
    pair = loglik.score_sentence_groups(model, tok, [["She is a nurse.", "He is a nurse."]])[0]
    assert [p.n_tokens for p in pair] == [len(tokens(tok, "She is a nurse.")), len(tokens(tok, "He is a nurse."))]
    assert pair[0].mean == pytest.approx(pair[0].total / pair[0].n_tokens)
