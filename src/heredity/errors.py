"""One exception type for every user-facing failure.

The CLI prints ``HeredityError`` as a single line (no traceback), so messages must
name the file, row and field when they come from user input.
"""

from __future__ import annotations


class HeredityError(Exception):
    """A problem the user can fix: bad input, bad config, missing dependency."""


def input_error(path: object, row: int | None, field: str | None, problem: str) -> HeredityError:
    """Build the standard one-line message for bad input data."""
    where = str(path)
    if row is not None:
        where += f", row {row}"
    if field is not None:
        where += f", field '{field}'"
    return HeredityError(f"{where}: {problem}")


def describe_validation(exc, model, noun: str = "option") -> str:
    """A pydantic ValidationError of ``model`` as one line: unknown, missing and invalid ``noun``s."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            known = ", ".join(model.model_fields) or "none"
            parts.append(f"unknown {noun} '{loc}' ({noun}s: {known})")
        elif err["type"] == "missing":
            parts.append(f"missing {noun} '{loc}'")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{noun} '{loc}': {msg}" if loc else msg)
    return "; ".join(parts)


def one_line(exc: BaseException) -> str:
    """An exception as ``Type: first line of its message``, for one-line error reports."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
