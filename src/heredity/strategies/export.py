"""A selection as chat data for TRL's SFTTrainer: rows, a .jsonl / .parquet file, or a Dataset."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from heredity.core.models import chat_messages
from heredity.core.rundir import atomic_path
from heredity.errors import HeredityError
from heredity.strategies.base import Row

ChatFormat = Literal["messages", "prompt-completion"]
METADATA = (("prompt_id", "string"), ("teacher", "string"), ("sample_index", "int64"))


def to_chat_rows(rows: Sequence[Row], system_prompt: str | None = None, fmt: ChatFormat = "messages",
                 metadata: bool = False) -> list[dict[str, Any]]:
    """Selected rows as conversations that TRL's SFTTrainer reads directly.

    ``messages``: ``{"messages": [system?, user, assistant]}`` (language modelling; the loss
    covers the whole conversation unless ``assistant_only_loss`` is set).
    ``prompt-completion``: ``{"prompt": [system?, user], "completion": [assistant]}``; TRL
    then computes the loss on the completion only — what heredity's train stage uses.
    ``system_prompt``: None sends no system message (the chat template may add its default),
    "" or text sends one — the same convention as generation and training.
    ``metadata`` adds prompt_id, teacher and sample_index so each example traces back to its
    candidate (SFTTrainer drops columns it does not use).
    """
    if fmt not in ("messages", "prompt-completion"):
        raise HeredityError(f"chat format must be 'messages' or 'prompt-completion', not '{fmt}'")
    out = []
    for row in rows:
        prompt = chat_messages(row["prompt"], system_prompt)
        answer = {"role": "assistant", "content": row["text"]}
        item: dict[str, Any] = ({"messages": [*prompt, answer]} if fmt == "messages"
                                else {"prompt": prompt, "completion": [answer]})
        if metadata:
            item.update({name: row[name] for name, _ in METADATA})
        out.append(item)
    return out


def chat_schema(fmt: ChatFormat, metadata: bool):
    # An explicit schema keeps the columns (and their types) even for an empty selection.
    import pyarrow as pa

    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    columns = [("messages", messages)] if fmt == "messages" else [("prompt", messages), ("completion", messages)]
    if metadata:
        columns += [(name, pa.string() if kind == "string" else pa.int64()) for name, kind in METADATA]
    return pa.schema(columns)


def export_selection(rows: Sequence[Row], path: str | Path, system_prompt: str | None = None,
                     fmt: ChatFormat = "messages", metadata: bool = False) -> Path:
    """Write the selection as chat rows to ``.jsonl`` (one JSON object a line) or ``.parquet``."""
    return export_batches([rows], path, system_prompt, fmt, metadata)


def export_batches(batches: Iterable[Sequence[Row]], path: str | Path, system_prompt: str | None = None,
                   fmt: ChatFormat = "messages", metadata: bool = False) -> Path:
    """:func:`export_selection` fed a batch of rows at a time (the same file), so a large
    selection is never held as chat rows all at once."""
    path = Path(path)
    if path.suffix == ".jsonl":
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            for rows in batches:
                chat = to_chat_rows(rows, system_prompt, fmt, metadata)
                fh.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in chat)
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = chat_schema(fmt, metadata)
        with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
            for rows in batches:
                writer.write_table(pa.Table.from_pylist(to_chat_rows(rows, system_prompt, fmt, metadata),
                                                        schema=schema))
    else:
        raise HeredityError(f"{path}: export writes .jsonl or .parquet, not '{path.suffix or 'no suffix'}'")
    return path


def to_sft_dataset(rows: Sequence[Row], system_prompt: str | None = None, fmt: ChatFormat = "messages",
                   metadata: bool = False):
    """The selection as a ``datasets.Dataset`` to pass as ``SFTTrainer(train_dataset=...)``."""
    from datasets import Dataset, Features  # imported here: datasets is slow to import

    chat = to_chat_rows(rows, system_prompt, fmt, metadata)
    schema = chat_schema(fmt, metadata)
    return Dataset.from_dict({name: [item[name] for item in chat] for name in schema.names},
                             features=Features.from_arrow_schema(schema))


# The extra columns of a preference pair beside TRL's conversational prompt/chosen/rejected.
PAIR_METADATA = (("prompt_id", "string"), ("chosen_teacher", "string"), ("rejected_teacher", "string"),
                 ("chosen_sample_index", "int64"), ("rejected_sample_index", "int64"),
                 ("chosen_score", "float64"), ("rejected_score", "float64"), ("margin", "float64"))


def to_preference_rows(pairs: Iterable[tuple[Row, Row, float]], metric: str,
                       system_prompt: str | None = None) -> list[dict[str, Any]]:
    """Pairs as the conversational preference rows TRL's DPOTrainer and the hub read
    (``prompt``: [system?, user], ``chosen`` / ``rejected``: [assistant]), with each side's teacher,
    sample index and value of ``metric``, and the margin (chosen better by this much)."""
    from heredity.strategies.base import value

    out = []
    for chosen, rejected, margin in pairs:
        out.append({
            "prompt": chat_messages(chosen["prompt"], system_prompt),
            "chosen": [{"role": "assistant", "content": chosen["text"]}],
            "rejected": [{"role": "assistant", "content": rejected["text"]}],
            "prompt_id": chosen["prompt_id"],
            "chosen_teacher": str(chosen["teacher"]), "rejected_teacher": str(rejected["teacher"]),
            "chosen_sample_index": chosen["sample_index"], "rejected_sample_index": rejected["sample_index"],
            "chosen_score": value(chosen, metric), "rejected_score": value(rejected, metric), "margin": margin,
        })
    return out


def preference_schema():
    import pyarrow as pa

    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    kinds = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64()}
    return pa.schema([("prompt", messages), ("chosen", messages), ("rejected", messages),
                      *((name, kinds[kind]) for name, kind in PAIR_METADATA)])
