"""What a judgment is (a query, a verdict, an answer pair) and how a verdict is read.

Verdict parsing (``parse_verdict``): a bare letter, "(a)", "**(B)**", "Answer: a", "a) ..." or
text naming exactly one of "(a)"/"(b)"; text naming both, or neither, is *unparseable*.
``judge_messages`` fills the rubric (``JudgeConfig.template``) with one query, answers cut to
``max_answer_chars`` (and marked so).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from heredity.config import JudgeConfig

PREFILL = "("  # the assistant turn's first character under method 'logprob'
TRUNCATION_MARK = " [...]"


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


@dataclass(frozen=True)
class Pair:
    """Two models' answers to one instruction, judged in both orders."""

    pair_id: str
    instruction: str
    answer_a: str
    answer_b: str
    model_a: str
    model_b: str


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


def order_preference(verdict: Verdict, a_first: bool) -> float | None:
    """One order's preference for answer A (None: unparseable)."""
    if verdict.p_first is not None:
        p = verdict.p_first
    elif verdict.choice is None:
        return None
    else:
        p = 1.0 if verdict.choice == "a" else 0.0
    return p if a_first else 1.0 - p
