"""Loading causal language models and their tokenizers.

``load_model`` works for any Hugging Face causal LM, from a local folder or a hub
id. It keeps the model's own attention implementation (SDPA by default): finwidget
captures attention without switching the model to the slow eager path.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from finwidget.errors import ModelLoadError

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _resolve_dtype(dtype, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16
        if device == "mps":
            return torch.float16
        return torch.float32
    if dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ModelLoadError(f"unknown dtype {dtype!r}; use 'auto', a torch.dtype or one of {sorted(_DTYPES)}")


def _looks_like_path(name: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else is meant as a folder."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def load_model(name_or_path: str | os.PathLike, device: str = "auto", dtype="auto",
               load_in_4bit: bool = False, **kwargs):
    """Load ``(model, tokenizer)`` for a Hugging Face causal LM.

    Args:
        name_or_path: a local folder (with ``config.json``, weights and tokenizer
            files) or a hub id such as ``"Qwen/Qwen2-7B-Instruct"``.
        device: ``"auto"`` (CUDA with accelerate's ``device_map="auto"`` spreading the
            model over every visible GPU, else MPS, else CPU), or a device string.
        dtype: ``"auto"`` (bfloat16 on CUDA, float16 on MPS, float32 on CPU), a
            ``torch.dtype`` or its name.
        load_in_4bit: quantize to 4 bits with bitsandbytes (CUDA only).
        **kwargs: passed on to ``AutoModelForCausalLM.from_pretrained``.

    Raises:
        ModelLoadError: the folder or id cannot be reached, or is not a causal LM.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    name = os.fspath(name_or_path)
    if not isinstance(name, str) or not name.strip():
        raise ModelLoadError(f"model name or path must be a non-empty string, got {name_or_path!r}")
    local = Path(name).expanduser()
    if _looks_like_path(name) and not local.exists():
        raise ModelLoadError(
            f"model folder {name!r} does not exist; pass the folder that holds the model's "
            "config.json and weights, or a hub id such as 'Qwen/Qwen2-7B-Instruct'"
        )
    if local.is_dir() and not (local / "config.json").is_file():
        raise ModelLoadError(f"model folder {name!r} has no config.json; is it a Hugging Face model folder?")
    source = str(local) if local.exists() else name

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"could not load a model config from {name!r}: {str(err).splitlines()[0]} "
            "Fix: check the spelling, pass a local folder, or (for a hub id) make sure this machine "
            "can reach the hub and you are logged in if the model is gated (`hf auth login`); "
            "offline, download it first and pass its folder."
        ) from None
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ModelLoadError(
            f"{name!r} is a {config.model_type!r} model, which is not a causal language model; "
            "finwidget needs a decoder-only model such as Qwen2"
        )

    resolved_device = _resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, resolved_device)
    load_kwargs = dict(kwargs)
    load_kwargs.setdefault("dtype", torch_dtype)
    if load_in_4bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ModelLoadError(
                "load_in_4bit=True needs the bitsandbytes package and a CUDA GPU: pip install bitsandbytes"
            ) from None
        from transformers import BitsAndBytesConfig

        load_kwargs.setdefault("quantization_config", BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_compute_dtype=torch_dtype))
    if resolved_device.startswith("cuda") and device == "auto":
        load_kwargs.setdefault("device_map", "auto")
    elif load_in_4bit:
        load_kwargs.setdefault("device_map", resolved_device)

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, **load_kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"could not load the model or tokenizer from {name!r}: {str(err).splitlines()[0]}"
        ) from None
    if "device_map" not in load_kwargs:
        model.to(resolved_device)
    model.eval()
    return model, tokenizer


def load_demo_model(variant: str = "default"):
    """A shipped demo model and its tokenizer (offline, float32, CPU).

    A small Qwen2 trained on synthetic statements with a planted, documented rule.

    Args:
        variant: ``"default"``: the demo model that reads one statement layout (see
            ``finwidget/demo/model/MODEL_CARD.md``); ``"layouts"``: a second model, trained
            on the same rule written as lines, markdown tables and aligned text tables
            (``make_statements(layout=...)``; see ``finwidget/demo/layouts_model/MODEL_CARD.md``).

    Raises:
        ModelLoadError: an unknown variant, or the variant's weights are missing.
    """
    from finwidget.demo import DEMO_MODEL_DIRS

    if not isinstance(variant, str) or variant not in DEMO_MODEL_DIRS:
        raise ModelLoadError(f"unknown demo model variant {variant!r}; use one of {sorted(DEMO_MODEL_DIRS)}")
    folder = DEMO_MODEL_DIRS[variant]
    if not (Path(folder) / "model.safetensors").is_file():
        raise ModelLoadError(
            f"the demo model's weights are missing from {folder}; reinstall finwidget or "
            "rebuild them with `python -m finwidget.demo.train` (see the model card in that folder)"
        )
    return load_model(folder, device="cpu", dtype=torch.float32)
