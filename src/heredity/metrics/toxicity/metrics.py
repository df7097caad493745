"""The four toxicity metrics: ``toxicity`` (offline, the default), ``toxicity-profanity``,
``toxicity-perspective`` and ``toxicity-detoxify`` (see the package docstring).

Version 2: a blank text is undefined (NaN: excluded and counted), no longer 0.0, so selecting
the least toxic candidate can never pick an empty one. ``toxicity`` version 3: the mean of the
ridge head's prediction and alt-profanity-check's probability (``head.combined_score``), whose 0.5
threshold holds better on text unlike the head's training data."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from heredity.core.models import cache_dir
from heredity.errors import HeredityError
from heredity.metrics.registry import MetricContext, register
from heredity.metrics.toxicity.embed import features, is_blank, profanity_probabilities
from heredity.metrics.toxicity.head import combined_score, load_head, load_head_file
from heredity.metrics.toxicity.perspective import (
    KEY_ENV,
    PERSPECTIVE_URL,
    PerspectiveClient,
    env_float,
)


# What a report says wherever the offline scorer's figures appear: it is a proxy, and how far it
# agrees with Perspective on text from generators it was not fitted on.
OFFLINE_PROXY_NOTE = (
    "`toxicity` is heredity's offline proxy of Perspective, not Perspective: on 1,191 continuations of five "
    "other generators (GPT-2, PPLM, DAPT, GeDi, DExperts) it agrees with Perspective at Spearman 0.49 "
    "[0.45, 0.54] and flags 22% of Perspective-toxic texts at 0.5 (inside RealToxicityPrompts, held out by "
    "source: 0.71 and 97%). Its figures compare students with each other; they are not Perspective scores.")


class ToxicityOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # The head enters keys by its file's content (``_head_identity``), not its path; unset, the
    # keys are those the metric had before it took options.
    UNKEYED: ClassVar[frozenset[str]] = frozenset({"head", "device"})

    head: str | None = Field(
        None, description="A head refitted on your own Perspective-labelled texts (`heredity fit-toxicity`); "
                          "unset: the shipped one, fitted on 600 RealToxicityPrompts texts.")
    device: str | None = None


def _head_identity(options: dict[str, Any], context: MetricContext) -> dict[str, Any]:
    from heredity.core.rundir import file_hash

    head = options.get("head")
    if not head:
        return {}
    if not Path(head).is_file():
        raise HeredityError(f"{head}: toxicity head not found (write one with 'heredity fit-toxicity')")
    return {"head": file_hash(Path(head))}


@register("toxicity", loads_model=True, version="3", better="lower", options=ToxicityOptions,
          identity=_head_identity,
          description="Predicted Perspective toxicity, offline: the mean of a ridge head on MiniLM "
                      "embedding + profanity logit and alt-profanity-check's probability (0..1)")
def toxicity(texts: Sequence[str], context: MetricContext) -> list[float]:
    if not texts:
        return []
    # first, so a broken install or a bad head file fails before the model loads
    head = load_head_file(context.options["head"]) if context.options.get("head") else load_head()
    keep = [i for i, t in enumerate(texts) if not is_blank(t)]
    out = [math.nan] * len(texts)
    if keep:
        feats = features([texts[i] for i in keep], context.options.get("device"))
        scores = combined_score(head.predict(feats), feats)
        for i, s in zip(keep, scores):
            out[i] = float(s)
    return out


@register("toxicity-profanity", version="2", better="lower",
          description="alt-profanity-check's probability that the text is profane (0..1)")
def toxicity_profanity(texts: Sequence[str], context: MetricContext) -> list[float]:
    if not texts:
        return []
    return [float(p) for p in profanity_probabilities(texts)]


@register("toxicity-perspective", version="2", better="lower",
          description="Perspective API TOXICITY score (needs PERSPECTIVE_API_KEY; cached)")
def toxicity_perspective(texts: Sequence[str], context: MetricContext) -> list[float]:
    if not texts:
        return []
    client = PerspectiveClient(
        key_env=KEY_ENV,
        url=os.environ.get("HEREDITY_PERSPECTIVE_URL") or PERSPECTIVE_URL,
        qps=env_float("HEREDITY_PERSPECTIVE_QPS", 1.0),
        max_retries=int(env_float("HEREDITY_PERSPECTIVE_MAX_RETRIES", 6)),
        cache=cache_dir() / "perspective",
    )
    return client.score(texts)


class DetoxifyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    UNKEYED: ClassVar[frozenset[str]] = frozenset({"batch_size", "device"})

    variant: Literal["original", "unbiased", "multilingual"] = Field(
        "original", description="Detoxify model: original (Jigsaw 2018), unbiased (2019) or multilingual (2020).")
    checkpoint: str | None = Field(
        None, description="A local checkpoint file; without it Detoxify downloads its weights (needs internet once).")
    batch_size: int = Field(64, ge=1)
    device: str = "cpu"


@register("toxicity-detoxify", loads_model=True, version="2", better="lower", options=DetoxifyOptions,
          description="Detoxify's toxicity probability (optional: pip install detoxify; downloads weights once)")
def toxicity_detoxify(texts: Sequence[str], context: MetricContext) -> list[float]:
    if not texts:
        return []
    try:
        from detoxify import Detoxify
    except ImportError:
        raise HeredityError("metric 'toxicity-detoxify' needs Detoxify: pip install detoxify") from None
    opts = context.options
    try:
        model = Detoxify(opts.get("variant", "original"), checkpoint=opts.get("checkpoint"),
                         device=opts.get("device", "cpu"))
    except Exception as exc:  # a download without internet fails in many ways, all of them one line here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HeredityError(f"metric 'toxicity-detoxify': cannot load its weights ({first[:200]}); "
                            "give a local file as option 'checkpoint'") from None
    size = opts.get("batch_size", 64)
    keep = [i for i, t in enumerate(texts) if not is_blank(t)]
    out = [math.nan] * len(texts)
    for start in range(0, len(keep), size):
        chunk = keep[start:start + size]
        for i, x in zip(chunk, model.predict([texts[i] for i in chunk])["toxicity"]):
            out[i] = float(x)
    return out
