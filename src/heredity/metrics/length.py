"""Length metrics: tokens (student's tokenizer), words, characters."""

from __future__ import annotations

import re
from typing import Sequence

from heredity.core.prompts import replace_lone_surrogates
from heredity.metrics.registry import MetricContext, register

_WORD = re.compile(r"\S+")


@register("length", description="Tokens in the text, counted with the student's tokenizer",
          needs_tokenizer=True, better="none")
def length_tokens(texts: Sequence[str], context: MetricContext) -> list[float]:
    if not texts:
        return []
    # tokenizers refuse a lone surrogate: it counts as U+FFFD, as a UTF-8 decoder would read it
    encoded = context.tokenizer([replace_lone_surrogates(t) for t in texts], add_special_tokens=False)["input_ids"]
    return [float(len(ids)) for ids in encoded]


@register("words", description="Whitespace-separated words in the text")
def length_words(texts: Sequence[str], context: MetricContext) -> list[float]:
    return [float(len(_WORD.findall(t))) for t in texts]


@register("chars", description="Characters in the text")
def length_chars(texts: Sequence[str], context: MetricContext) -> list[float]:
    return [float(len(t)) for t in texts]
