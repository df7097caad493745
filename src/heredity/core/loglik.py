"""Batched log-likelihood scoring with a causal language model.

Two kinds of request, both reduced to a token sequence plus the index of its first scored
token (:class:`TokenSequence`):

* conditional, ``log p(continuation | context)`` (HellaSwag endings, BBQ answers):
  :func:`encode_continuation`;
* unconditional, ``log p(sentence)`` (CrowS-Pairs, StereoSet): :func:`encode_sentence`.

Every sequence starts with one *start token* (:func:`start_ids`): the tokenizer's BOS token
when it declares one, otherwise its EOS token (GPT-2 style ``<|endoftext|>``, the document
separator such models are trained with). Without it the first token of a sentence would have
nothing to be conditioned on and could not be scored. (SmolLM2 declares its chat-turn marker
``<|im_start|>`` as BOS; its pretraining separator ``<|endoftext|>`` gives somewhat higher
likelihoods, but every sentence and context gets the same start, so comparisons within an item
are affected only through the first token's conditioning.)

Token boundaries. The context and ``context + continuation`` are tokenized separately (no
special tokens) and the continuation is the *difference*: the tokens of the joint text past
the first ``len(tokens(context))``. The model is fed the joint text's own tokenization, the
one it would see in running text, instead of two independently tokenized halves glued
together. Whitespace at the end of the context is moved onto the continuation first, because
BPE vocabularies attach a space to the *following* word: ``"Answer: " + "yes"`` is scored as
``"Answer:" + " yes"``. If a merge straddles the boundary (rare; the difference is then not
exactly the continuation's characters), the split still falls at ``len(tokens(context))``,
and at least one token is always scored.

Shared prefixes. Callers pass *groups* of sequences (the options of one multiple-choice item,
the sentences of one CrowS pair). With ``share_prefix=True`` the longest common token prefix of
a group is run through the model once, its key/value cache is repeated for each member, and
only the differing suffixes run again; several groups share each forward pass (prefixes right-
padded, suffixes right-padded after the padded prefix, with explicit attention masks and
position ids). With ``share_prefix=False`` every full sequence runs in one padded batch. Which
is faster depends on how long the shared part is; ``benchmarks/loglik.py`` measures both.

Only hidden states at scored positions go through the output projection (the vocabulary
projection is a large share of a small model's compute), in chunks to bound memory.
:func:`score_one_by_one` is the plain reference: one sequence per forward, logits straight from
``model(...)``; the tests check the batched paths against it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from heredity.errors import HeredityError

# Rows of hidden states projected to vocabulary logits at once (memory: rows x vocab floats).
HEAD_CHUNK = 1024


@dataclass(frozen=True)
class LogLik:
    """Natural-log likelihood of the scored tokens of one sequence."""

    total: float  # sum of per-token log-probabilities
    n_tokens: int

    @property
    def mean(self) -> float:
        return self.total / self.n_tokens


@dataclass(frozen=True)
class TokenSequence:
    """Token ids fed to the model; tokens ``ids[start:]`` are scored (``start >= 1``)."""

    ids: tuple[int, ...]
    start: int

    def __post_init__(self) -> None:
        if not 1 <= self.start < len(self.ids):
            raise ValueError(f"need 1 <= start < len(ids), got start={self.start}, len={len(self.ids)}")


def start_ids(tokenizer) -> list[int]:
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise HeredityError("the tokenizer has neither a BOS nor an EOS token to start a sequence with")
    return [int(token)]


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def encode_continuations(tokenizer, pairs: Seq[tuple[str, str]]) -> list[TokenSequence]:
    """``(context, continuation)`` pairs as sequences whose scored part is the continuation."""
    contexts, joints = [], []
    for context, continuation in pairs:
        if not continuation.strip():
            raise ValueError(f"empty continuation after context {context[-40:]!r}")
        trailing = len(context) - len(context.rstrip())
        if trailing:  # see the module docstring: the space belongs to the next word's token
            context, continuation = context[:-trailing], context[-trailing:] + continuation
        contexts.append(context)
        joints.append(context + continuation)
    start = start_ids(tokenizer)
    out = []
    for ctx, whole in zip(_encode(tokenizer, contexts), _encode(tokenizer, joints)):
        split = min(len(ctx), len(whole) - 1)
        out.append(TokenSequence(tuple(start + whole), len(start) + split))
    return out


def encode_continuation(tokenizer, context: str, continuation: str) -> TokenSequence:
    return encode_continuations(tokenizer, [(context, continuation)])[0]


def encode_sentences(tokenizer, sentences: Seq[str]) -> list[TokenSequence]:
    """Whole sentences, every token scored, conditioned only on the start token."""
    for s in sentences:
        if not s.strip():
            raise ValueError("empty sentence")
    start = start_ids(tokenizer)
    return [TokenSequence(tuple(start + ids), len(start)) for ids in _encode(tokenizer, list(sentences))]


def encode_sentence(tokenizer, sentence: str) -> TokenSequence:
    return encode_sentences(tokenizer, [sentence])[0]


# --- the model side ---------------------------------------------------------------------------


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _project(model, hidden: torch.Tensor) -> torch.Tensor:
    """Vocabulary logits from final hidden states, as the model's own forward computes them."""
    logits = model.get_output_embeddings()(hidden).float()
    scale = getattr(model.config, "logit_scale", None)  # Cohere-style scaled logits
    if scale is not None:
        logits = logits * scale
    cap = getattr(model.config, "final_logit_softcapping", None)  # Gemma-2-style soft cap
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _check_projection(model) -> None:
    """Once per model: decoder + projection must reproduce ``model(...).logits``.

    The fast path skips the model's own head wrapper; an architecture that post-processes
    logits in a way :func:`_project` does not know would otherwise give silently wrong scores.
    """
    if getattr(model, "_heredity_projection_ok", False):
        return
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]], device=_device(model))
    with torch.inference_mode():
        reference = model(input_ids=ids).logits.float()
        ours = _project(model, model.get_decoder()(input_ids=ids).last_hidden_state)
    if not torch.allclose(reference, ours, atol=1e-3, rtol=1e-3):
        raise HeredityError(f"log-likelihood scoring does not support {type(model).__name__}: "
                            "its logits are not a plain projection of the last hidden state")
    model._heredity_projection_ok = True


def _cache_arg(decoder) -> str:
    """The key/value cache's name in forward() and its output: ``cache`` from transformers 5.2x,
    ``past_key_values`` before (still accepted there, with a deprecation warning)."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def _common_prefix(seqs: Seq[TokenSequence]) -> int:
    """Tokens shared by every member, leaving each member at least one token of its own."""
    first = seqs[0].ids
    n = min(len(s.ids) for s in seqs) - 1
    for s in seqs[1:]:
        i = 0
        while i < n and s.ids[i] == first[i]:
            i += 1
        n = i
    return n


def _long(values: list[int], device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)


def _pad(rows: list[Seq[int]], width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask (the pad id is irrelevant: the mask hides it)."""
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


def _sum_logprobs(model, hidden: torch.Tensor, targets: torch.Tensor, owner: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Sum over scored positions of log p(target), per owning row."""
    sums = torch.zeros(n_rows, dtype=torch.float64, device=hidden.device)
    for lo in range(0, hidden.shape[0], HEAD_CHUNK):
        logits = _project(model, hidden[lo : lo + HEAD_CHUNK])
        logp = torch.log_softmax(logits, dim=-1).gather(1, targets[lo : lo + HEAD_CHUNK, None])[:, 0]
        sums.index_add_(0, owner[lo : lo + HEAD_CHUNK], logp.double())
    return sums


def _score_flat(model, seqs: list[TokenSequence]) -> list[LogLik]:
    device = _device(model)
    ids, mask = _pad([s.ids for s in seqs], max(len(s.ids) for s in seqs), device)
    hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    rows, cols, targets = [], [], []
    for r, s in enumerate(seqs):
        positions = range(s.start - 1, len(s.ids) - 1)  # the hidden state at p predicts token p + 1
        rows += [r] * len(positions)
        cols += positions
        targets += s.ids[s.start :]
    rows_t = _long(rows, device)
    sums = _sum_logprobs(model, hidden[rows_t, _long(cols, device)], _long(targets, device), rows_t, len(seqs))
    return [LogLik(float(sums[r]), len(s.ids) - s.start) for r, s in enumerate(seqs)]


def _score_shared(model, groups: list[list[TokenSequence]]) -> list[list[LogLik]]:
    device = _device(model)
    decoder = model.get_decoder()
    shared = [_common_prefix(g) for g in groups]
    if min(shared) < 1:
        raise ValueError("every group must share at least its first token (the start token)")
    prefix_ids, prefix_mask = _pad([g[0].ids[:n] for g, n in zip(groups, shared)], max(shared), device)
    out = decoder(input_ids=prefix_ids, attention_mask=prefix_mask, use_cache=True)
    prefix_hidden, cache = out.last_hidden_state, out[_cache_arg(decoder)]

    members = [(gi, s) for gi, g in enumerate(groups) for s in g]
    owner_group = torch.tensor([gi for gi, _ in members], dtype=torch.long, device=device)
    cache.batch_select_indices(owner_group)  # one copy of its group's prefix cache per member
    suffixes = [s.ids[shared[gi] :] for gi, s in members]
    width = max(len(x) for x in suffixes)
    suffix_ids, suffix_mask = _pad(suffixes, width, device)
    # Suffix tokens continue their own prefix's positions; the padding between a short prefix and
    # its suffix is masked out, so the result equals an unpadded run.
    positions = torch.tensor([shared[gi] for gi, _ in members], device=device)[:, None] + torch.arange(width, device=device)
    suffix_hidden = decoder(
        input_ids=suffix_ids,
        attention_mask=torch.cat([prefix_mask[owner_group], suffix_mask], dim=1),
        position_ids=positions,
        use_cache=True,
        **{_cache_arg(decoder): cache},
    ).last_hidden_state

    # Each scored token's predicting hidden state: position p < n (the shared prefix) lives in the
    # prefix run's row of the group, later ones in the member's own suffix row.
    from_prefix: list[tuple[int, int, int, int]] = []  # (row, column, member, target token)
    from_suffix: list[tuple[int, int, int, int]] = []
    for r, (gi, s) in enumerate(members):
        n = shared[gi]
        for p in range(s.start - 1, len(s.ids) - 1):
            if p < n:
                from_prefix.append((gi, p, r, s.ids[p + 1]))
            else:
                from_suffix.append((r, p - n, r, s.ids[p + 1]))
    hidden, member, target = [], [], []
    for states, picks in ((prefix_hidden, from_prefix), (suffix_hidden, from_suffix)):
        if picks:  # either may be empty (e.g. every suffix a single, unscored-as-predictor token)
            row, col, who, tok = (_long(list(c), device) for c in zip(*picks))
            hidden.append(states[row, col])
            member.append(who)
            target.append(tok)
    sums = _sum_logprobs(model, torch.cat(hidden), torch.cat(target), torch.cat(member), len(members))
    flat = [LogLik(float(sums[r]), len(s.ids) - s.start) for r, (_, s) in enumerate(members)]
    out_groups, i = [], 0
    for g in groups:
        out_groups.append(flat[i : i + len(g)])
        i += len(g)
    return out_groups


def _batches(groups: list[list[TokenSequence]], batch_size: int, share_prefix: bool) -> Iterable[list[int]]:
    """Group indices packed so a batch holds at most ``batch_size`` sequences, longest first.

    Sorting puts similar shapes together (little padding) and makes a too-large batch fail on
    the first one. Without prefix sharing the shape is the full length. With it, the suffix run
    holds a row per member padded to the longest suffix, so suffix length sorts first (in buckets
    of 4 tokens, then by prefix length): on HellaSwag this pads ~15% fewer tokens than sorting by
    full length, and on BBQ (long shared contexts) about as few.
    """
    def shape(g: list[TokenSequence]):
        longest = max(len(s.ids) for s in g)
        if not share_prefix:
            return (-longest,)
        prefix = _common_prefix(g)
        return (-((longest - prefix) // 4), -prefix)

    order = sorted(range(len(groups)), key=lambda i: shape(groups[i]))
    batch: list[int] = []
    rows = 0
    for i in order:
        if batch and rows + len(groups[i]) > batch_size:
            yield batch
            batch, rows = [], 0
        batch.append(i)
        rows += len(groups[i])
    if batch:
        yield batch


def score_groups(model, groups: Seq[Seq[TokenSequence]], batch_size: int = 32, share_prefix: bool = True,
                 progress=None) -> list[list[LogLik]]:
    """Score every sequence of every group; the result has the groups' shape.

    ``batch_size`` counts sequences per forward pass (a group is never split). ``progress``,
    if given, is called with the number of groups finished after each batch.
    """
    groups = [list(g) for g in groups]
    if any(not g for g in groups):
        raise ValueError("empty group")
    _check_projection(model)
    results: list[list[LogLik] | None] = [None] * len(groups)
    with torch.inference_mode():
        for batch in _batches(groups, batch_size, share_prefix):
            if share_prefix:
                scored = _score_shared(model, [groups[i] for i in batch])
            else:
                flat = _score_flat(model, [s for i in batch for s in groups[i]])
                scored, k = [], 0
                for i in batch:
                    scored.append(flat[k : k + len(groups[i])])
                    k += len(groups[i])
            for i, res in zip(batch, scored):
                results[i] = res
            if progress is not None:
                progress(len(batch))
    return results  # type: ignore[return-value]


def score_one_by_one(model, seqs: Seq[TokenSequence]) -> list[LogLik]:
    """Reference scorer: one unpadded sequence per forward, logits from ``model(...)`` itself."""
    device = _device(model)
    out = []
    with torch.inference_mode():
        for s in seqs:
            n = len(s.ids) - s.start
            # logits_to_keep: only the last n + 1 positions; the last one predicts past the end
            logits = model(input_ids=torch.tensor([s.ids], device=device), logits_to_keep=n + 1).logits[0, :-1]
            logp = torch.log_softmax(logits.float(), dim=-1)
            target = torch.tensor(s.ids[s.start :], device=device)
            out.append(LogLik(float(logp.gather(1, target[:, None]).double().sum()), n))
    return out


# --- text-level helpers used by the suites ------------------------------------------------------


def score_choices(model, tokenizer, items: Seq[tuple[str, Seq[str]]], **kwargs) -> list[list[LogLik]]:
    """``(context, [continuation, ...])`` items: each option scored given its item's context."""
    flat = encode_continuations(tokenizer, [(ctx, opt) for ctx, opts in items for opt in opts])
    groups, i = [], 0
    for _, opts in items:
        groups.append(flat[i : i + len(opts)])
        i += len(opts)
    return score_groups(model, groups, **kwargs)


def score_sentence_groups(model, tokenizer, groups: Seq[Seq[str]], **kwargs) -> list[list[LogLik]]:
    """Unconditional log-likelihoods of sentences, grouped (sentences of a group share prefixes)."""
    flat = encode_sentences(tokenizer, [s for g in groups for s in g])
    out, i = [], 0
    for g in groups:
        out.append(flat[i : i + len(g)])
        i += len(g)
    return score_groups(model, out, **kwargs)
