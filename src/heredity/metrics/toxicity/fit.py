"""Refit the ``toxicity`` head on a user's own Perspective-labelled texts, checked held out by group.

The shipped head was fitted on 600 RealToxicityPrompts texts (human web text); on other
generators' continuations it agrees with Perspective far less (see ``OFFLINE_PROXY_NOTE``). A user
who holds Perspective scores for text like their own (say, continuations of several generators)
can refit it here: :func:`refit` fits the head on their texts (plus the 600 RTP texts when the
shared data is at hand) and measures, for every group (a generator), the shipped scorer against
the refitted one **on that group held out**: the refit that scores a group never saw a text of it,
so the figures say what the refit does for a generator it was not fitted on. The head it writes is
fitted on everything; ``score.metric_options: {toxicity: {head: FILE}}`` makes runs use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heredity.errors import HeredityError
from heredity.metrics.toxicity.head import Head, combined_score, fit_head, load_head

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Labelled:
    """Texts with their Perspective TOXICITY score and the group (generator) each came from."""

    texts: list[str]
    scores: list[float]
    groups: list[str]
    source: str


def read_labelled(path: Path, text_field: str = "text", score_field: str = "toxicity",
                  group_field: str | None = "generator") -> Labelled:
    """Rows of a .jsonl/.json/.csv/.parquet file; a bad row is a one-line error naming it.
    Without ``group_field`` every text is one group (then nothing can be held out by group)."""
    from heredity.core.prompts import read_rows

    path = Path(path)
    if not path.is_file():
        raise HeredityError(f"{path}: labelled file not found")
    rows, label = read_rows(str(path))
    texts, scores, groups = [], [], []
    for i, row in enumerate(rows, start=1):
        text = row.get(text_field)
        if not isinstance(text, str) or not text.strip():
            raise HeredityError(f"{label}, row {i}, field '{text_field}': must be a non-empty string")
        try:
            score = float(row.get(score_field))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise HeredityError(f"{label}, row {i}, field '{score_field}': must be a number in [0, 1] "
                                f"(got {row.get(score_field)!r})") from None
        if not 0.0 <= score <= 1.0:  # NaN fails this too
            raise HeredityError(f"{label}, row {i}, field '{score_field}': must be a number in [0, 1] (got {score})")
        group = "all" if group_field is None else row.get(group_field)
        if group is None or str(group).strip() == "":
            raise HeredityError(f"{label}, row {i}, field '{group_field}': missing (the group each text is held out by)")
        texts.append(text)
        scores.append(score)
        groups.append(str(group))
    if not texts:
        raise HeredityError(f"{label}: no rows")
    return Labelled(texts, scores, groups, label)


def agreement(pred: Sequence[float], truth: Sequence[float]) -> dict[str, Any]:
    """Spearman's rho and AUROC against Perspective (toxic: >= 0.5), and the shares flagged at 0.5:
    of the Perspective-toxic texts (``flagged``) and of the others (``false_flags``). A figure a
    group cannot have (AUROC of a group with one class) is None, never a number."""
    import numpy as np
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    p, y = np.asarray(pred, dtype=float), np.asarray(truth, dtype=float)
    toxic = y >= 0.5
    rho = spearmanr(p, y).statistic if len(y) > 2 and np.ptp(y) > 0 and np.ptp(p) > 0 else math.nan
    return {
        "n": int(len(y)), "n_toxic": int(toxic.sum()),
        "spearman": None if math.isnan(rho) else float(rho),
        "auroc": float(roc_auc_score(toxic, p)) if 0 < toxic.sum() < len(y) else None,
        "flagged": float((p[toxic] >= 0.5).mean()) if toxic.any() else None,
        "false_flags": float((p[~toxic] >= 0.5).mean()) if (~toxic).any() else None,
    }


@dataclass(frozen=True)
class Refit:
    """The head fitted on everything; the agreement report (per group and pooled: the shipped
    scorer, and the refit scoring each group held out); the held-out scores themselves (NaN where
    nothing could be held out: a single group)."""

    head: Head
    report: dict[str, Any]
    held_out: np.ndarray


def refit(labelled: Labelled, features: np.ndarray, alpha: float | None = None,
          extra: tuple[np.ndarray, np.ndarray] | None = None) -> Refit:
    """Fit the head on all of ``labelled`` (plus ``extra``: features and scores always in the
    training set, the RTP texts) and report, per group and pooled, the shipped scorer and the
    refit scoring that group held out (fitted on the other groups and ``extra``), both combined with
    alt-profanity-check as the ``toxicity`` metric combines them. ``alpha``: the ridge penalty
    (default: the shipped head's)."""
    import numpy as np

    shipped = load_head()
    alpha = float(shipped.meta.get("alpha", 3.0) if alpha is None else alpha)
    y = np.asarray(labelled.scores, dtype=float)
    groups = np.asarray(labelled.groups)
    names = sorted(set(labelled.groups))
    shipped_pred = combined_score(shipped.predict(features), features)

    def training(x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x``, ``t`` with ``extra`` beside them: the extra texts are always trained on."""
        return (x, t) if extra is None else (np.vstack([extra[0], x]), np.concatenate([extra[1], t]))

    several = len(names) > 1  # one group: nothing can be held out
    held_out = np.full(len(y), np.nan)
    for name in names if several else []:
        test = groups == name
        head = fit_head(*training(features[~test], y[~test]), alpha)
        held_out[test] = combined_score(head.predict(features[test]), features[test])

    def figures(rows: Any) -> dict[str, Any]:
        return {"shipped": agreement(shipped_pred[rows], y[rows]),
                "refit_held_out": agreement(held_out[rows], y[rows]) if several else None}

    report: dict[str, Any] = {"alpha": alpha, "groups": {name: figures(groups == name) for name in names},
                              "pooled": figures(slice(None))}
    meta = {k: v for k, v in shipped.meta.items() if k in ("format", "features", "target")}
    meta.update({
        "trained_on": f"{len(y)} texts of {labelled.source} ({len(names)} groups: {', '.join(names)})"
                      + (f" and {len(extra[1])} RealToxicityPrompts texts" if extra is not None else ""),
        "held_out_by_group": report,
    })
    return Refit(fit_head(*training(features, y), alpha, meta), report, held_out)
