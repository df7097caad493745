"""Length metrics: tokens (student's tokenizer), words, characters."""

from __future__ import annotations

import re
from typing import Sequence

from heredity.core.prompts import replace_lone_surrogates
from heredity.metrics.registry import MetricContext, register

_WORD = re.compile(r"\S+")
_CHUNK = 1024


@register("length", description="Tokens in the text, counted with the student's tokenizer",
          needs_tokenizer=True, better="none")
def length_tokens(texts: Sequence[str], context: MetricContext) -> list[float]:
    if not texts:
        return []
    counts: list[float] = []
    # In chunks: a call returns every token id as a Python int (with an attention mask), a few
    # hundred MB for ten thousand long answers; only the counts are kept.
    for lo in range(0, len(texts), _CHUNK):
        # tokenizers refuse a lone surrogate: it counts as U+FFFD, as a UTF-8 decoder would read it
        chunk = [replace_lone_surrogates(t) for t in texts[lo:lo + _CHUNK]]
        encoded = context.tokenizer(chunk, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        counts.extend(float(len(ids)) for ids in encoded)
    return counts


@register("words", description="Whitespace-separated words in the text")
def length_words(texts: Sequence[str], context: MetricContext) -> list[float]:
    return [float(len(_WORD.findall(t))) for t in texts]


@register("chars", description="Characters in the text")
def length_chars(texts: Sequence[str], context: MetricContext) -> list[float]:
    return [float(len(t)) for t in texts]
