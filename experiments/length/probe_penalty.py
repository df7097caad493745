"""The probe behind study 1's third protocol: how the untrained student's sampled answers to
AlpacaEval instructions change with the repetition penalty (heredity's transformers decoding, the
study's sampling: temperature 0.7, top-p 0.9, prompt i seeded with i, 768-token cap). It reads
every 4th instruction from the first (the study holds out every 4th from the fourth): the
untrained model has seen none of them. The probe ran on the base model alone, but only after
protocols 1 and 2 had been evaluated on the trained students and had failed against base: the
choice of a third protocol is post hoc (see protocols.md).

    python experiments/length/probe_penalty.py --prompts 24 1.0 1.1 1.2    (~4 min per penalty, 2 cores)

Prints one JSON line per penalty: mean and median answer tokens, answers cut at the cap, mean
distinct-2 over whitespace words.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from heredity.backends import Request
from heredity.backends.transformers_backend import generate_batch
from heredity.config import SamplingConfig
from heredity.core.data import default_data_dir
from heredity.core.models import chat_messages, load_model, load_tokenizer

STUDENT = "embedded:smollm2-135m-instruct"


def distinct_2(text: str) -> float:
    words = text.split()
    pairs = list(zip(words, words[1:]))
    return len(set(pairs)) / max(1, len(pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("penalties", nargs="+", type=float)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=768)
    args = parser.parse_args()
    rows = json.loads((default_data_dir() / "alpaca_eval" / "gpt-3.5-turbo-0613.json").read_text(encoding="utf-8"))
    prompts = [r["instruction"] for i, r in enumerate(rows) if i % 4 == 0][:args.prompts]
    model, tokenizer = load_model(STUDENT, "cpu"), load_tokenizer(STUDENT)
    for penalty in args.penalties:
        started = time.perf_counter()
        sampling = SamplingConfig(temperature=0.7, top_p=0.9, max_new_tokens=args.max_new_tokens,
                                  repetition_penalty=penalty)
        answers = generate_batch(model, tokenizer, [Request(chat_messages(p, None), i) for i, p in enumerate(prompts)],
                                 sampling)
        tokens = [a.completion_tokens for a in answers]
        print(json.dumps({"penalty": penalty, "prompts": len(prompts), "mean_tokens": round(statistics.mean(tokens), 1),
                          "median_tokens": statistics.median(tokens),
                          "cut": sum(a.finish_reason == "length" for a in answers),
                          "distinct_2": round(statistics.mean(distinct_2(a.text) for a in answers), 3),
                          "seconds": round(time.perf_counter() - started)}), flush=True)


if __name__ == "__main__":
    main()
