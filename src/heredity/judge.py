"""LLM as judge: pairwise comparison of two answers to the same instruction by a judge model.

Two uses:

- ``pairwise``: model A's answers against model B's on the same prompts; the judge's win rate
  of A over B with a bootstrap 95% CI over prompts, how often the judge agrees with itself when
  the answers swap places, and a length-controlled win rate;
- ``preference_profile``: the *judge-preference profile* of "LLM See, LLM Do" (Shimabucoro et
  al. 2024): a fixed set of answer pairs from several models (``alpaca_eval_pairs``), judged by
  the model under study; which models, and which kinds of answer (longer ones), it prefers.
  ``compare_profiles`` compares two judges (base vs fine-tuned student) on the same pairs with
  paired resampling.

Protocol (the choices made):

- **Judge.** Any generation backend (``transformers``, ``openai``), built from a
  ``TeacherConfig`` through ``heredity.backends.open_backend``; ``replay`` cannot judge. Greedy
  decoding, ``max_new_tokens`` (8) tokens; ``judge.sampling`` is ignored.
- **Rubric.** ``JUDGE_TEMPLATE``: the instruction, "Answer (a)", "Answer (b)", then "Output
  only (a) or (b)". Answers longer than ``max_answer_chars`` are cut for the prompt (and
  counted); lengths used for length control are always those of the full answers.
- **Both orders.** Every pair is judged as (A, B) and as (B, A). A prompt's preference for A is
  the mean of the two orders' preferences, so a judge that always names the first answer scores
  exactly 0.5 everywhere. *Position consistency*: share of prompts, among those with both
  verdicts parsed, where the two orders name the same answer.
- **Verdict parsing** (``parse_verdict``): a bare letter, "(a)", "**(B)**", "Answer: a", "a) ..."
  or text naming exactly one of "(a)"/"(b)"; text naming both, or neither, is *unparseable*.
  Unparseable verdicts are counted and reported; by default (``unparseable: tie``) an
  unparseable order counts as 0.5 (no information), so every prompt keeps its weight and a judge
  that cannot follow the format is pulled towards 50, not towards whichever answer it happened
  to name. ``unparseable: drop`` leaves such orders out instead (a prompt with neither order
  parsed is dropped; one with a single order parsed loses the position-bias cancellation).
- **Log-probability verdicts** (``method: logprob``, the default for a local ``transformers``
  judge): instead of decoding, the judge's next-token log-probabilities of the two verdict
  letters after the assistant turn's "(" are compared (the first token where "(a)" and "(b)"
  differ). The preference for the first answer is ``p(a) / (p(a) + p(b))``, a soft verdict as in
  AlpacaEval 2's weighted win rate; never unparseable. Tiny models (SmolLM2-135M) rarely follow
  the output format when decoding, so this is what makes them usable as judges. The hard
  verdict (for consistency) is the likelier letter. ``method: generate`` decodes instead.
- **Win rate** of A: 100 × mean over prompts of the preference for A (ties count half), with a
  percentile bootstrap 95% CI over prompts.
- **Length-controlled win rate**, after AlpacaEval 2 LC (Dubois et al. 2024): a logistic
  regression of the (soft) preference on a model term (θ_A − θ_B) plus φ·tanh(Δlen / sd(Δlen)),
  Δlen = len(A) − len(B) in characters of the full answers, sd over the judged prompts; then
  100·σ(θ_A − θ_B), i.e. the prediction with the length difference set to zero. AlpacaEval's
  instruction-difficulty term is left out. Fitted by Newton's method with a small L2 penalty
  (``lc_l2``) so that a judge that always prefers the longer answer (perfect separation) still
  has a finite fit. With several models (a profile) there is one θ per model, and a model's LC
  win rate is the mean over its own pairs of σ(θ_m − θ_opponent). The CI refits on each
  bootstrap resample.

Outputs (``out``): ``judgments.parquet`` (one row per pair: both orders' raw verdicts, parsed
letters, preferences, lengths) and ``summary.json``, written atomically.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Protocol, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from heredity.config import SamplingConfig, TeacherConfig
from heredity.errors import HeredityError, input_error
from heredity.profile.common import SuiteResult, data_file, estimate

JUDGE_SYSTEM = "You are a careful and impartial judge of answers written by AI assistants."

JUDGE_TEMPLATE = """Compare two answers to the same instruction and decide which one is better: more helpful, \
correct and relevant. Do not let the order of the answers influence you.

### Instruction
{instruction}

### Answer (a)
{first}

### Answer (b)
{second}

Which answer is better, (a) or (b)? Output only (a) or (b)."""

PREFILL = "("  # the assistant turn's first character under method 'logprob'
TRUNCATION_MARK = " [...]"


class JudgeConfig(BaseModel):
    """How to judge. ``judge`` is a teacher-style model spec (model, backend, backend options)."""

    model_config = ConfigDict(extra="forbid")

    judge: TeacherConfig = Field(default_factory=lambda: TeacherConfig(batch_size=8),
                                 description="The judge model and its backend (sampling is ignored: greedy).")
    method: Literal["auto", "generate", "logprob"] = Field(
        "auto", description="auto: logprob for a transformers judge, generate otherwise.")
    unparseable: Literal["tie", "drop"] = Field("tie", description="An unparseable verdict counts 0.5, or is dropped.")
    max_answer_chars: int | None = Field(3000, ge=1, description="Answers are cut to this length in the prompt.")
    max_new_tokens: int = Field(8, ge=1, description="Tokens decoded for a verdict (method generate).")
    system_prompt: str | None = Field(JUDGE_SYSTEM, description="None: the chat template's default.")
    template: str = Field(JUDGE_TEMPLATE, description="User message with {instruction}, {first}, {second}.")
    bootstrap_samples: int = Field(1000, ge=100)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    lc_l2: float = Field(0.1, gt=0, description="L2 penalty of the length-controlled logistic regression.")

    @field_validator("template")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        missing = [p for p in ("{instruction}", "{first}", "{second}") if p not in value]
        if missing:
            raise ValueError(f"template lacks {', '.join(missing)}")
        return value

    def resolved_method(self) -> str:
        if self.method != "auto":
            return self.method
        return "logprob" if self.judge.backend == "transformers" else "generate"


def judge_config(spec: "JudgeConfig | TeacherConfig | dict | str | None" = None, **overrides: Any) -> JudgeConfig:
    """A ``JudgeConfig`` from a model reference, a ``TeacherConfig``, a dict, or a config itself."""
    try:
        if spec is None:
            cfg = JudgeConfig()
        elif isinstance(spec, JudgeConfig):
            cfg = spec
        elif isinstance(spec, TeacherConfig):
            cfg = JudgeConfig(judge=spec)
        elif isinstance(spec, str):
            cfg = JudgeConfig(judge=TeacherConfig(model=spec, batch_size=8))
        elif isinstance(spec, dict):
            cfg = JudgeConfig.model_validate(spec)
        else:
            raise HeredityError(f"judge: expected a model reference or a config, got {type(spec).__name__}")
        if overrides:
            cfg = JudgeConfig.model_validate({**cfg.model_dump(), **overrides})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise HeredityError(f"judge config: field '{loc}': {err['msg']}") from None
    return cfg


# ------------------------------------------------------------------------------ verdicts


@dataclass(frozen=True)
class Query:
    """One judgment: an instruction and two answers in the order shown."""

    instruction: str
    first: str
    second: str


@dataclass(frozen=True)
class Verdict:
    raw: str                     # the judge's text (or a note of its log-probabilities)
    choice: str | None           # "a" (first shown) / "b" (second) / None (unparseable)
    p_first: float | None = None  # soft preference for the first answer (method logprob)


class Judge(Protocol):
    label: str
    method: str

    def judge(self, queries: Sequence[Query]) -> list[Verdict]: ...

    def close(self) -> None: ...


_STRIP = " \t\r\n*_`\"'.!:;-[]<>"
_BARE = re.compile(r"^(?:(?:answer|output|response|verdict|better|best|choice)\s*[:=]?\s*)?\(?\s*([ab])\s*\)?$", re.I)
_PAREN = re.compile(r"\(\s*([ab])\s*\)", re.I)
_LEADING = re.compile(r"^\W*(?:(?:answer|output|response|verdict|choice)\s*[:=]?\s*)?\(?([ab])(?:\)|\.|:|,|$)", re.I)
_NAMED = re.compile(r"\b(?:answer|output|response)\s*\(?([ab])\)?\s+is\s+(?:the\s+)?(?:better|best)", re.I)


def parse_verdict(text: str) -> str | None:
    """``"a"``, ``"b"`` or ``None``: see the module docstring for the accepted forms."""
    t = (text or "").strip()
    if not t:
        return None
    bare = _BARE.match(t.strip(_STRIP))
    if bare:
        return bare.group(1).lower()
    for pattern in (_PAREN, _NAMED):
        letters = {m.lower() for m in pattern.findall(t)}
        if len(letters) == 1:
            return letters.pop()
        if len(letters) > 1:
            return None  # names both answers: ambiguous
    leading = _LEADING.match(t.splitlines()[0])
    return leading.group(1).lower() if leading else None


def _cut(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    return text[:limit].rstrip() + TRUNCATION_MARK


def judge_messages(query: Query, cfg: JudgeConfig) -> list[dict[str, str]]:
    content = (cfg.template.replace("{instruction}", query.instruction.strip())
               .replace("{first}", _cut(query.first.strip(), cfg.max_answer_chars))
               .replace("{second}", _cut(query.second.strip(), cfg.max_answer_chars)))
    messages = [] if cfg.system_prompt is None else [{"role": "system", "content": cfg.system_prompt}]
    messages.append({"role": "user", "content": content})
    return messages


class GenerationJudge:
    """Decodes a verdict through any generation backend and parses it."""

    method = "generate"

    def __init__(self, backend: Any, cfg: JudgeConfig, label: str | None = None):
        self.backend = backend
        self.cfg = cfg
        self.label = label or cfg.judge.label

    def judge(self, queries: Sequence[Query]) -> list[Verdict]:
        from heredity.backends import BatchIncomplete, Request

        greedy = SamplingConfig(temperature=0.0, max_new_tokens=self.cfg.max_new_tokens)
        out: list[Verdict] = []
        size = self.cfg.judge.batch_size
        for start in range(0, len(queries), size):
            chunk = queries[start:start + size]
            requests = [Request(judge_messages(q, self.cfg), 0) for q in chunk]
            try:
                completions = self.backend.generate(requests, greedy)
            except BatchIncomplete as exc:  # keep what finished; failed requests are unparseable
                completions = exc.completions
            for c in completions:
                text = "<request failed>" if c is None else c.text
                out.append(Verdict(text, None if c is None else parse_verdict(c.text)))
        return out

    def close(self) -> None:
        self.backend.close()


class LogprobJudge:
    """Compares the log-probabilities of the two verdict letters after the assistant's "(".

    One forward pass per query, over the prompt up to the first token where the encodings of
    "(a)" and "(b)" differ; only the last position's logits are computed.
    """

    method = "logprob"

    def __init__(self, model: Any, tokenizer: Any, cfg: JudgeConfig, label: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.label = label or cfg.judge.label

    def _encode(self, query: Query) -> tuple[list[int], int, int]:
        context = self.tokenizer.apply_chat_template(judge_messages(query, self.cfg), tokenize=False,
                                                     add_generation_prompt=True)
        ids_a = self.tokenizer(context + PREFILL + "a)", add_special_tokens=False)["input_ids"]
        ids_b = self.tokenizer(context + PREFILL + "b)", add_special_tokens=False)["input_ids"]
        k = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y), None)
        if k is None:
            raise HeredityError(f"judge '{self.label}': its tokenizer encodes '(a)' and '(b)' alike")
        return ids_a[:k], ids_a[k], ids_b[k]

    def judge(self, queries: Sequence[Query]) -> list[Verdict]:
        import torch

        encoded = [self._encode(q) for q in queries]
        order = sorted(range(len(queries)), key=lambda i: -len(encoded[i][0]))  # little padding per batch
        result: dict[int, Verdict] = {}
        pad = self.tokenizer.pad_token_id
        size = self.cfg.judge.batch_size
        device = next(self.model.parameters()).device
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            width = max(len(encoded[i][0]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):  # left padding: the last position is every row's next token
                seq = encoded[i][0]
                ids[row, width - len(seq):] = torch.tensor(seq)
                mask[row, width - len(seq):] = 1
            with torch.inference_mode():
                out = self.model(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=1)
            logprobs = out.logits[:, -1, :].float().log_softmax(dim=-1).cpu()
            for row, i in enumerate(chunk):
                la, lb = float(logprobs[row, encoded[i][1]]), float(logprobs[row, encoded[i][2]])
                p_first = 1.0 / (1.0 + float(np.exp(lb - la)))
                choice = "a" if la > lb else "b" if lb > la else None
                result[i] = Verdict(f"logp(a)={la:.4f} logp(b)={lb:.4f}", choice, p_first)
        return [result[i] for i in range(len(queries))]

    def close(self) -> None:
        self.model = None


def open_judge(spec: "Judge | JudgeConfig | TeacherConfig | dict | str | None" = None) -> Judge:
    """A judge from a spec: ``logprob`` loads the model itself, ``generate`` goes through a backend."""
    if hasattr(spec, "judge") and callable(getattr(spec, "judge")):
        return spec  # already a judge
    cfg = judge_config(spec)
    teacher = cfg.judge
    if teacher.backend == "replay":
        raise HeredityError(f"judge '{teacher.label}': backend 'replay' cannot judge; use transformers or openai")
    method = cfg.resolved_method()
    from heredity.core.models import pick_device

    device = pick_device(cfg.device)
    if method == "logprob":
        if teacher.backend != "transformers":
            raise HeredityError(f"judge '{teacher.label}': method 'logprob' needs backend 'transformers'")
        from heredity.core.models import load_model, load_tokenizer

        return LogprobJudge(load_model(teacher.model, device), load_tokenizer(teacher.model), cfg)
    from heredity.backends import open_backend

    return GenerationJudge(open_backend(teacher, device), cfg)


def _judge_cfg(judge: Any, cfg: JudgeConfig | None) -> JudgeConfig:
    if cfg is not None:
        return cfg
    return getattr(judge, "cfg", None) or JudgeConfig()


def _open(judge: Any, cfg: JudgeConfig | None) -> tuple[Judge, JudgeConfig]:
    """The judge to use and the protocol settings: ``cfg`` with ``judge``'s model when both are given."""
    if isinstance(judge, (str, TeacherConfig)) and cfg is not None:
        cfg = cfg.model_copy(update={"judge": judge_config(judge).judge})
        return open_judge(cfg), cfg
    if isinstance(judge, (str, TeacherConfig, JudgeConfig, dict)) or judge is None:
        cfg = judge_config(judge)
        return open_judge(cfg), cfg
    return judge, _judge_cfg(judge, cfg)


# ------------------------------------------------------------------------------ pairs


@dataclass(frozen=True)
class Pair:
    pair_id: str
    instruction: str
    answer_a: str
    answer_b: str
    model_a: str
    model_b: str


def _order_pref(verdict: Verdict, a_first: bool) -> float | None:
    """This order's preference for answer A (None: unparseable)."""
    if verdict.p_first is not None:
        p = verdict.p_first
    elif verdict.choice is None:
        return None
    else:
        p = 1.0 if verdict.choice == "a" else 0.0
    return p if a_first else 1.0 - p


def judge_pairs(judge: Judge, pairs: Sequence[Pair], cfg: JudgeConfig | None = None,
                log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Judge every pair in both orders; one row per pair."""
    cfg = _judge_cfg(judge, cfg)
    if not pairs:
        raise HeredityError("judge: no pairs to judge")
    queries = []
    for p in pairs:
        queries.append(Query(p.instruction, p.answer_a, p.answer_b))  # A shown first
        queries.append(Query(p.instruction, p.answer_b, p.answer_a))  # B shown first
    started = time.perf_counter()
    verdicts = judge.judge(queries)
    if log:
        log(f"judge '{judge.label}' ({judge.method}): {len(queries)} verdicts in {time.perf_counter() - started:.1f}s")
    rows = []
    limit = cfg.max_answer_chars
    for i, p in enumerate(pairs):
        ab, ba = verdicts[2 * i], verdicts[2 * i + 1]
        pref_ab, pref_ba = _order_pref(ab, True), _order_pref(ba, False)
        if cfg.unparseable == "tie":
            parts = [0.5 if x is None else x for x in (pref_ab, pref_ba)]
        else:
            parts = [x for x in (pref_ab, pref_ba) if x is not None]
        # a hard verdict per order, in terms of which answer (A or B) it names
        named_ab = None if ab.choice is None else ("A" if ab.choice == "a" else "B")
        named_ba = None if ba.choice is None else ("B" if ba.choice == "a" else "A")
        rows.append({
            "pair_id": p.pair_id, "instruction": p.instruction, "model_a": p.model_a, "model_b": p.model_b,
            "answer_a": p.answer_a, "answer_b": p.answer_b, "len_a": len(p.answer_a), "len_b": len(p.answer_b),
            "truncated_a": limit is not None and len(p.answer_a.strip()) > limit,
            "truncated_b": limit is not None and len(p.answer_b.strip()) > limit,
            "raw_ab": ab.raw, "choice_ab": ab.choice, "p_first_ab": ab.p_first, "pref_a_ab": pref_ab,
            "raw_ba": ba.raw, "choice_ba": ba.choice, "p_first_ba": ba.p_first, "pref_a_ba": pref_ba,
            "pref_a": float(np.mean(parts)) if parts else None,
            "consistent": None if named_ab is None or named_ba is None else named_ab == named_ba,
        })
    return rows


# ------------------------------------------------------------------------------ statistics


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -500, 500)))


def fit_length_glm(pref: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray, n_models: int,
                   length_feature: np.ndarray, l2: float = 0.1, max_iter: int = 100) -> tuple[np.ndarray, float]:
    """Logistic regression ``logit P(A preferred) = θ[a] − θ[b] + φ·x`` with soft targets.

    Penalised (``l2``·|β|²/2) maximum likelihood by Newton's method; returns (θ, φ).
    """
    n = len(pref)
    X = np.zeros((n, n_models + 1))
    X[np.arange(n), idx_a] += 1.0
    X[np.arange(n), idx_b] -= 1.0
    X[:, -1] = length_feature
    beta = np.zeros(n_models + 1)
    for _ in range(max_iter):
        p = _sigmoid(X @ beta)
        grad = X.T @ (p - pref) + l2 * beta
        hess = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.eye(n_models + 1)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-9:
            break
    return beta[:-1], float(beta[-1])


def length_feature(len_a: np.ndarray, len_b: np.ndarray) -> np.ndarray:
    """tanh(Δlen / sd(Δlen)), AlpacaEval 2 LC's length term (sd 1 when every Δ is equal)."""
    delta = np.asarray(len_a, float) - np.asarray(len_b, float)
    sd = float(delta.std()) if len(delta) > 1 else 0.0
    return np.tanh(delta / (sd if sd > 0 else 1.0))


def _usable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["pref_a"] is not None]


def _judging_stats(rows: list[dict[str, Any]], cfg: JudgeConfig) -> dict[str, Any]:
    """Verdict quality: parse failures, position consistency, first-position rate, longer-answer preference."""
    n_b, seed = cfg.bootstrap_samples, cfg.seed
    choices = [r[k] for r in rows for k in ("choice_ab", "choice_ba")]
    parsed = [c for c in choices if c is not None]
    both = np.array([r["consistent"] for r in rows if r["consistent"] is not None], dtype=float)
    usable = _usable(rows)
    longer = np.array([r["pref_a"] if r["len_a"] > r["len_b"] else 1.0 - r["pref_a"]
                       for r in usable if r["len_a"] != r["len_b"]], dtype=float)
    consistency = estimate(lambda i: 100 * both[i].mean(), len(both), n_b, seed)
    consistency["n"] = int(len(both))
    # per pair: verdicts naming the first-shown answer, and verdicts parsed (0-2 each); resampled
    # by pair, since a pair's two orders are not independent verdicts
    firsts = np.array([sum(r[k] == "a" for k in ("choice_ab", "choice_ba")) for r in rows], dtype=float)
    parsed_n = np.array([sum(r[k] is not None for k in ("choice_ab", "choice_ba")) for r in rows], dtype=float)
    first_rate = estimate(lambda i: 100 * firsts[i].sum() / parsed_n[i].sum() if parsed_n[i].sum() else None,
                          len(rows), n_b, seed)
    first_rate["n"] = int(parsed_n.sum())
    longer_pref = estimate(lambda i: 100 * longer[i].mean(), len(longer), n_b, seed)
    longer_pref["n"] = int(len(longer))
    return {
        "verdicts": len(choices),
        "unparseable": {"count": len(choices) - len(parsed),
                        "rate": (len(choices) - len(parsed)) / len(choices) if choices else None,
                        "policy": cfg.unparseable},
        "pairs_used": len(usable),
        "position_consistency": consistency,
        "first_position_rate": first_rate,
        "longer_preferred": longer_pref,
        "truncated_answers": int(sum(r["truncated_a"] + r["truncated_b"] for r in rows)),
    }


def _protocol(judge: Judge, cfg: JudgeConfig) -> dict[str, Any]:
    """The judge and the rubric, without secrets (no key; a base URL without credentials)."""
    teacher = cfg.judge
    out: dict[str, Any] = {"judge": getattr(judge, "label", teacher.label), "method": judge.method,
                           "backend": teacher.backend if hasattr(judge, "cfg") else "custom",
                           "model": teacher.model if hasattr(judge, "cfg") else None,
                           "both_orders": True, "unparseable": cfg.unparseable,
                           "max_answer_chars": cfg.max_answer_chars, "max_new_tokens": cfg.max_new_tokens,
                           "decoding": "greedy", "system_prompt": cfg.system_prompt, "template": cfg.template,
                           "length_unit": "characters", "lc_l2": cfg.lc_l2,
                           "bootstrap_samples": cfg.bootstrap_samples, "seed": cfg.seed}
    if teacher.openai is not None and hasattr(judge, "cfg"):
        from heredity.backends.openai_backend import _public_url

        out["base_url"] = _public_url(teacher.openai.base_url)
    return out


def summarise_pairwise(rows: list[dict[str, Any]], cfg: JudgeConfig) -> dict[str, Any]:
    """Win rate of A over B (percent) with CI, the length-controlled win rate, verdict quality."""
    n_b, seed = cfg.bootstrap_samples, cfg.seed
    usable = _usable(rows)
    pref = np.array([r["pref_a"] for r in usable], dtype=float)
    len_a = np.array([r["len_a"] for r in usable], dtype=float)
    len_b = np.array([r["len_b"] for r in usable], dtype=float)
    x = length_feature(len_a, len_b)
    zeros = np.zeros(len(pref), dtype=int)

    def lc(i: np.ndarray) -> float:
        theta, _ = fit_length_glm(pref[i], zeros[i], zeros[i] + 1, 2, x[i], cfg.lc_l2)
        return 100 * float(_sigmoid(theta[0] - theta[1]))

    phi = fit_length_glm(pref, zeros, zeros + 1, 2, x, cfg.lc_l2)[1] if len(pref) else None
    return {
        "model_a": rows[0]["model_a"], "model_b": rows[0]["model_b"], "pairs": len(rows),
        "win_rate": estimate(lambda i: 100 * pref[i].mean(), len(pref), n_b, seed),
        "wins": int((pref > 0.5).sum()), "ties": int((pref == 0.5).sum()), "losses": int((pref < 0.5).sum()),
        "length_controlled": {"win_rate": estimate(lc, len(pref), n_b, seed), "length_coef": phi},
        "mean_length": {"a": float(len_a.mean()) if len(pref) else None,
                        "b": float(len_b.mean()) if len(pref) else None},
        **_judging_stats(rows, cfg),
    }


def _finish(result: SuiteResult, out: Path | None) -> SuiteResult:
    if out is not None:
        from heredity.core.rundir import write_json, write_table

        out = Path(out)
        write_table(out / "judgments.parquet", result.rows)
        write_json(out / "summary.json", result.summary)
    return result


def pairwise(judge: "Judge | JudgeConfig | TeacherConfig | str", pairs: Sequence[Pair],
             cfg: JudgeConfig | None = None, out: Path | None = None,
             log: Callable[[str], None] | None = None) -> SuiteResult:
    """Judge A's answers against B's (each pair's ``model_a``/``model_b`` name the two sides)."""
    return _judge_and_summarise("pairwise", summarise_pairwise, judge, pairs, cfg, out, log)


def _judge_and_summarise(kind: str, summarise: Callable[[list[dict[str, Any]], JudgeConfig], dict[str, Any]],
                         judge: Any, pairs: Sequence[Pair], cfg: JudgeConfig | None, out: Path | None,
                         log: Callable[[str], None] | None) -> SuiteResult:
    started = time.perf_counter()
    opened, cfg = _open(judge, cfg)
    try:
        rows = judge_pairs(opened, pairs, cfg, log)
    finally:
        if opened is not judge:
            opened.close()
    summary = {"kind": kind, "protocol": _protocol(opened, cfg), **summarise(rows, cfg),
               "wall_s": round(time.perf_counter() - started, 2)}
    return _finish(SuiteResult(summary, rows), out)


# ------------------------------------------------------------------------------ profile


def _model_prefs(rows: list[dict[str, Any]], model: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into rows) of the pairs a model takes part in, and its preference on each (NaN: dropped)."""
    idx, vals = [], []
    for i, r in enumerate(rows):
        if model in (r["model_a"], r["model_b"]):
            idx.append(i)
            p = r["pref_a"]
            vals.append(np.nan if p is None else (p if r["model_a"] == model else 1.0 - p))
    return np.array(idx, dtype=int), np.array(vals, dtype=float)


def _models(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["model_a"] for r in rows} | {r["model_b"] for r in rows})


def _nanmean(x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else None


def summarise_profile(rows: list[dict[str, Any]], cfg: JudgeConfig) -> dict[str, Any]:
    n_b, seed = cfg.bootstrap_samples, cfg.seed
    models = _models(rows)
    usable = _usable(rows)
    index = {m: k for k, m in enumerate(models)}
    pref = np.array([r["pref_a"] for r in usable], dtype=float)
    ia = np.array([index[r["model_a"]] for r in usable], dtype=int)
    ib = np.array([index[r["model_b"]] for r in usable], dtype=int)
    x = length_feature([r["len_a"] for r in usable], [r["len_b"] for r in usable])

    def lc_rates(i: np.ndarray) -> np.ndarray:
        """Each model's LC win rate (percent) on the resample ``i``."""
        theta, _ = fit_length_glm(pref[i], ia[i], ib[i], len(models), x[i], cfg.lc_l2)
        rates = np.full(len(models), np.nan)
        p_ab = _sigmoid(theta[ia] - theta[ib])  # on every usable pair: the model's own matchups
        for m in range(len(models)):
            own = np.concatenate([p_ab[ia == m], 1 - p_ab[ib == m]])
            rates[m] = 100 * own.mean() if len(own) else np.nan
        return rates

    phi = fit_length_glm(pref, ia, ib, len(models), x, cfg.lc_l2)[1] if len(pref) else None
    lc_point = lc_rates(np.arange(len(pref))) if len(pref) else np.full(len(models), np.nan)
    # one set of refits serves every model's LC CI
    rng = np.random.default_rng(seed)
    boot = np.array([lc_rates(rng.integers(0, len(pref), len(pref))) for _ in range(n_b)]) if len(pref) else None
    per_model: dict[str, Any] = {}
    for m in models:
        _, vals = _model_prefs(rows, m)
        vals = vals[~np.isnan(vals)]
        k = index[m]
        lc_ci = [None, None]
        if boot is not None and np.isfinite(boot[:, k]).sum() >= n_b / 2:
            col = boot[:, k][np.isfinite(boot[:, k])]
            lc_ci = [float(np.quantile(col, 0.025)), float(np.quantile(col, 0.975))]
        per_model[m] = {
            "pairs": int(len(vals)),
            "win_rate": estimate(lambda i, v=vals: 100 * v[i].mean(), len(vals), n_b, seed),
            "lc_win_rate": {"value": None if np.isnan(lc_point[k]) else float(lc_point[k]), "ci95": lc_ci},
            "mean_length": _nanmean(np.array([r["len_a"] if r["model_a"] == m else r["len_b"]
                                              for r in rows if m in (r["model_a"], r["model_b"])], float)),
        }
    ranking = sorted(models, key=lambda m: -(per_model[m]["win_rate"]["value"] or 0))
    return {"pairs": len(rows), "models": per_model, "ranking": ranking, "length_coef": phi,
            **_judging_stats(rows, cfg)}


def preference_profile(judge: "Judge | JudgeConfig | TeacherConfig | str", pairs: Sequence[Pair],
                       cfg: JudgeConfig | None = None, out: Path | None = None,
                       log: Callable[[str], None] | None = None) -> SuiteResult:
    """Which models (and which answer lengths) a judge prefers over a fixed set of answer pairs."""
    return _judge_and_summarise("preference_profile", summarise_profile, judge, pairs, cfg, out, log)


def compare_profiles(first: SuiteResult | list[dict[str, Any]], second: SuiteResult | list[dict[str, Any]],
                     samples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Second judge minus first on the same pairs: per-model win rate and longer-answer preference.

    Paired bootstrap: pairs are resampled jointly for both judges. Pairs either judge dropped
    are left out of both.
    """
    rows1 = first.rows if isinstance(first, SuiteResult) else first
    rows2 = second.rows if isinstance(second, SuiteResult) else second
    by_id = {r["pair_id"]: r for r in rows2}
    shared = [(r, by_id[r["pair_id"]]) for r in rows1 if r["pair_id"] in by_id]
    shared = [(a, b) for a, b in shared if a["pref_a"] is not None and b["pref_a"] is not None]
    if not shared:
        raise HeredityError("compare_profiles: the two profiles share no judged pairs")
    for a, b in shared:
        if (a["model_a"], a["model_b"]) != (b["model_a"], b["model_b"]):
            raise HeredityError(f"compare_profiles: pair '{a['pair_id']}' differs between the profiles")
    rows = [a for a, _ in shared]
    p1 = np.array([a["pref_a"] for a, _ in shared], float)
    p2 = np.array([b["pref_a"] for _, b in shared], float)

    def paired(v1: np.ndarray, v2: np.ndarray) -> dict[str, Any]:
        d = v2 - v1
        out = estimate(lambda i: 100 * d[i].mean(), len(d), samples, seed)
        return {"first": 100 * float(v1.mean()), "second": 100 * float(v2.mean()),
                "diff": out["value"], "ci95": out["ci95"], "pairs": int(len(d))}

    models = {}
    for m in _models(rows):
        sign = np.array([1.0 if r["model_a"] == m else -1.0 if r["model_b"] == m else 0.0 for r in rows])
        own = sign != 0
        v1 = np.where(sign > 0, p1, 1 - p1)[own]
        v2 = np.where(sign > 0, p2, 1 - p2)[own]
        models[m] = paired(v1, v2)
    differ = np.array([r["len_a"] != r["len_b"] for r in rows])
    a_longer = np.array([r["len_a"] > r["len_b"] for r in rows])
    l1 = np.where(a_longer, p1, 1 - p1)[differ]
    l2 = np.where(a_longer, p2, 1 - p2)[differ]
    return {"pairs": len(shared), "models": models, "longer_preferred": paired(l1, l2),
            "note": "diff = second judge - first judge, in percentage points; paired bootstrap over pairs"}


# ------------------------------------------------------------------------------ data


def alpaca_eval_pairs(data_dir: Path | None = None, n: int = 100, models: Sequence[str] | None = None,
                      seed: int = 0) -> list[Pair]:
    """``n`` answer pairs from ``alpaca_eval/`` (one JSON file per model, the same 805 instructions).

    A seeded sample of ``n`` distinct instructions; each gets one pair of distinct models, taken in
    turn from a shuffled list of all model pairs (so every model appears about equally often),
    in a random A/B orientation. ``models``: file stems to use (default: every file).
    """
    folder = data_file(data_dir, "alpaca_eval")
    files = sorted(folder.glob("*.json"))
    if models is not None:
        wanted = list(models)
        by_stem = {f.stem: f for f in files}
        unknown = [m for m in wanted if m not in by_stem]
        if unknown:
            raise HeredityError(f"{folder}: no answers for {', '.join(unknown)}; have: {', '.join(sorted(by_stem))}")
        files = [by_stem[m] for m in wanted]
    if len(files) < 2:
        raise HeredityError(f"{folder}: need answers of at least two models, found {len(files)}")
    answers: dict[str, list[dict[str, Any]]] = {}
    for f in files:
        data = json.loads(f.read_text(encoding="utf-8"))
        for i, row in enumerate(data, start=1):
            for field in ("instruction", "output"):
                if not isinstance(row.get(field), str):
                    raise input_error(f, i, field, "must be a string")
        answers[f.stem] = data
    names = list(answers)
    ref = answers[names[0]]
    for m in names[1:]:
        if len(answers[m]) != len(ref):
            raise HeredityError(f"{folder / (m + '.json')}: {len(answers[m])} rows, {names[0]} has {len(ref)}")
        for i, (x, y) in enumerate(zip(ref, answers[m]), start=1):
            if x["instruction"] != y["instruction"]:
                raise input_error(folder / f"{m}.json", i, "instruction", f"differs from {names[0]}'s row {i}")
    if n < 1:
        raise HeredityError(f"alpaca_eval_pairs: n must be at least 1, got {n}")
    n = min(n, len(ref))
    rng = np.random.default_rng(seed)
    items = np.sort(rng.choice(len(ref), size=n, replace=False))
    combos = [(x, y) for k, x in enumerate(names) for y in names[k + 1:]]
    order = rng.permutation(len(combos))
    flips = rng.random(n) < 0.5
    pairs = []
    for j, item in enumerate(items):
        x, y = combos[order[j % len(combos)]]
        if flips[j]:
            x, y = y, x
        pairs.append(Pair(pair_id=f"{int(item)}:{x}:{y}", instruction=ref[item]["instruction"],
                          answer_a=answers[x][item]["output"], answer_b=answers[y][item]["output"],
                          model_a=x, model_b=y))
    return pairs


PROMPT_FIELDS = ("prompt", "instruction")
ANSWER_FIELDS = ("text", "answer", "output", "response")


def load_answers(source: str | Path, prompt_field: str | None = None,
                 answer_field: str | None = None) -> tuple[list[tuple[str, str]], str]:
    """(prompt, answer) rows of a JSON/JSONL/CSV/Parquet file, a folder with ``answers.parquet``
    (``evaluate/<arm>``), or ``RUN_DIR:ARM``; and a label (the arm, the generator or the file stem)."""
    from heredity.core.prompts import read_rows

    path = Path(source)
    label = path.stem
    if not path.exists() and ":" in str(source):
        run_dir, _, arm = str(source).rpartition(":")
        candidate = Path(run_dir) / "evaluate" / arm / "answers.parquet"
        if candidate.is_file():
            path, label = candidate, arm
    if path.is_dir():
        if not (path / "answers.parquet").is_file():
            raise HeredityError(f"{path}: no answers.parquet in this folder")
        path, label = path / "answers.parquet", path.name
    if not path.exists():
        raise HeredityError(f"{source}: answers file not found")
    rows, where = read_rows(str(path))
    if not rows:
        raise HeredityError(f"{where}: no rows")
    columns = set(rows[0])
    pf = prompt_field or next((f for f in PROMPT_FIELDS if f in columns), None)
    af = answer_field or next((f for f in ANSWER_FIELDS if f in columns), None)
    if pf is None or af is None:
        missing = "prompt (or instruction)" if pf is None else "answer (text, answer, output or response)"
        raise input_error(where, 1, None, f"no {missing} column; columns: {', '.join(map(str, rows[0]))}")
    out: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows, start=1):
        for field in (pf, af):
            if not isinstance(row.get(field), str):
                raise input_error(where, i, field, "missing or not a string")
        prompt = row[pf].strip()
        if not prompt:
            raise input_error(where, i, pf, "empty prompt")
        if prompt in seen:
            raise input_error(where, i, pf, f"the same prompt as row {seen[prompt]}")
        seen[prompt] = i
        out.append((prompt, row[af]))
    generators = {row.get("generator") for row in rows}
    if len(generators) == 1 and isinstance(next(iter(generators)), str) and path.name != "answers.parquet":
        label = next(iter(generators))
    return out, label


def pair_answers(a: Sequence[tuple[str, str]], b: Sequence[tuple[str, str]], label_a: str, label_b: str,
                 limit: int | None = None) -> list[Pair]:
    """Pairs for the prompts both sides answered (matched by prompt text), in A's order."""
    b_by_prompt = dict(b)
    shared = [(p, ans) for p, ans in a if p in b_by_prompt]
    if not shared:
        raise HeredityError(f"judge: '{label_a}' and '{label_b}' answered no prompt in common")
    if limit is not None:
        shared = shared[:limit]
    if label_a == label_b:
        label_b = label_b + " (B)"
    return [Pair(f"{i}", p, ans, b_by_prompt[p], label_a, label_b) for i, (p, ans) in enumerate(shared)]


# ------------------------------------------------------------------------------ the run's judge stage

# Which arms a run's judge compares (A vs B): the steering effect, and active against the base.
RUN_COMPARISONS = (("active", "passive"), ("active", "base"))


def run_comparisons(variants: Any = ()) -> list[tuple[str, str]]:
    """RUN_COMPARISONS, then each ``select.variants`` arm against the passive baseline."""
    return [*RUN_COMPARISONS, *((v, "passive") for v in variants)]


def run_judge(cfg: Any, run_dir: Path, eval_stages: dict[str, Any], a: str, b: str) -> Any:
    """The ``judge/<a>_vs_<b>`` stage of a run: the judge compares two arms' held-out answers.

    Keyed by both evaluate stages' keys and the judge config, so a new target re-judges only
    comparisons that involve the active arm.
    """
    from heredity.core.rundir import Stage, read_table

    jc = judge_config(cfg.eval.judge, device=cfg.device, bootstrap_samples=cfg.eval.bootstrap_samples)
    stage = Stage(run_dir, f"judge/{a}_vs_{b}", {
        "a": eval_stages[a].key, "b": eval_stages[b].key,
        "judge": jc.model_dump(mode="json", exclude={"bootstrap_samples", "device"}),
    })
    if stage.reuse():
        return stage
    stage.start()
    answers_b = {r["prompt_id"]: r for r in read_table(eval_stages[b].dir / "answers.parquet")}
    pairs = [Pair(pair_id=str(r["prompt_id"]), instruction=r["prompt"], answer_a=r["text"],
                  answer_b=answers_b[r["prompt_id"]]["text"], model_a=a, model_b=b)
             for r in read_table(eval_stages[a].dir / "answers.parquet") if r["prompt_id"] in answers_b]
    result = pairwise(jc, pairs, jc, out=stage.dir)
    stage.finish({"judgments": "judgments.parquet", "summary": "summary.json"},
                 counts={"pairs": result.summary["pairs"]})
    return stage


def summarise_run_judgments(stages: dict[str, Any]) -> dict[str, Any]:
    from heredity.core.rundir import read_json

    out = {}
    for name, stage in stages.items():
        s = read_json(stage.dir / "summary.json")
        out[name] = {"judge": s["protocol"]["judge"], "method": s["protocol"]["method"], "pairs": s["pairs"],
                     "win_rate": s["win_rate"], "length_controlled_win_rate": s["length_controlled"]["win_rate"],
                     "position_consistency": s["position_consistency"], "longer_preferred": s["longer_preferred"],
                     "mean_length_chars": s["mean_length"]}
    return out
