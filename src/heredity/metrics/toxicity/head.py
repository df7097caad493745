"""The ridge head of the default toxicity scorer: features to logit(Perspective TOXICITY).

Its 385 weights ship in ``heredity/data/toxicity/minilm_ridge.json``; ``benchmarks/toxicity.py
--fit`` refits them with :func:`fit_head`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heredity.errors import HeredityError

if TYPE_CHECKING:
    import numpy as np

HEAD_RESOURCE = ("heredity.data.toxicity", "minilm_ridge.json")


@dataclass(frozen=True)
class Head:
    """A linear map from features to logit(toxicity)."""

    coef: tuple[float, ...]
    intercept: float
    meta: dict[str, Any]

    def predict(self, feats: np.ndarray) -> np.ndarray:
        import numpy as np

        z = feats @ np.asarray(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def to_json(self) -> dict[str, Any]:
        # 7 significant digits keep the file small and change no prediction measurably
        return {**self.meta, "intercept": float(f"{self.intercept:.7g}"),
                "coef": [float(f"{c:.7g}") for c in self.coef]}


def fit_head(feats: np.ndarray, scores: np.ndarray, alpha: float,
             meta: dict[str, Any] | None = None) -> Head:
    """Ridge regression of logit(score) on the features, intercept not penalised.

    Fitted in logit space because Perspective's scores pile up near 0 and 1, where the
    distances that matter for ranking are small in probability but large in logit.
    """
    import numpy as np

    y = np.clip(np.asarray(scores, dtype=np.float64), 1e-3, 1 - 1e-3)
    target = np.log(y / (1 - y))
    x = np.asarray(feats, dtype=np.float64)
    x_mean, t_mean = x.mean(0), target.mean()
    xc = x - x_mean
    coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (target - t_mean))
    return Head(tuple(coef.tolist()), float(t_mean - x_mean @ coef), dict(meta or {}, alpha=alpha))


def combined_score(head_probability: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """The default scorer from the head's prediction (``Head.predict(feats)``): its mean with
    alt-profanity-check's probability, recovered from the features' last column (its clipped logit).

    The head ranks degrees of toxicity best on text like the 600 it was fitted on, but its 0.5
    threshold follows the base rate of those texts (fitted on all-toxic prompts alone, it flags
    every completion). alt-profanity-check was trained on a large labelled corpus of comments, so
    its probability is anchored elsewhere. Held out by source the mean ranks as well as the better
    of the two and flags far fewer clean texts than the head; in distribution it ranks as the head
    does (``benchmarks/toxicity.py``). Equal weights: nothing here is tuned to one data set.
    """
    import numpy as np

    profanity = 1.0 / (1.0 + np.exp(-np.asarray(feats)[:, -1]))
    return (np.asarray(head_probability) + profanity) / 2.0


@lru_cache(maxsize=1)
def load_head() -> Head:
    try:
        raw = json.loads(files(HEAD_RESOURCE[0]).joinpath(HEAD_RESOURCE[1]).read_text(encoding="utf-8"))
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise HeredityError(f"metric 'toxicity': its trained head is missing from the installed "
                            f"package ({exc}); reinstall heredity") from None
    return _from_json(raw)


def load_head_file(path: str) -> Head:
    """A head a user refitted (``heredity fit-toxicity``), from its JSON file."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        head = _from_json(raw)
    except FileNotFoundError:
        raise HeredityError(f"{path}: toxicity head not found (write one with 'heredity fit-toxicity')") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HeredityError(f"{path}: not a toxicity head written by 'heredity fit-toxicity' ({exc})") from None
    if len(head.coef) != len(load_head().coef):
        raise HeredityError(f"{path}: a toxicity head of {len(head.coef)} weights; this heredity's features "
                            f"take {len(load_head().coef)}")
    return head


def _from_json(raw: dict[str, Any]) -> Head:
    raw = dict(raw)
    coef = tuple(float(c) for c in raw.pop("coef"))
    intercept = float(raw.pop("intercept"))
    return Head(coef, intercept, raw)
