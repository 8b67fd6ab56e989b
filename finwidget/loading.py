"""Loading causal language models and their tokenizers.

``load_model`` works for any Hugging Face decoder-only causal LM, from a local folder
or a hub id. It keeps the model's own attention implementation (SDPA by default):
finwidget captures attention without switching the model to the slow eager path.

Nothing is loaded silently wrong: an encoder, an encoder-decoder, a model any of whose
weights would be freshly initialised (a missing LM head, a config that does not fit
its weights), a missing or unusable tokenizer, a corrupt weights file, weights holding
NaN or infinity and a bad device string each raise one ``ModelLoadError`` naming the
file or value and the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from finwidget.errors import FinwidgetError, ModelLoadError

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}

# Device names people type that torch does not know, and what they mean.
_DEVICE_HINTS = {"gpu": "cuda", "nvidia": "cuda", "cuda0": "cuda:0", "metal": "mps", "apple": "mps"}
_DEVICE_ADVICE = "use 'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or 'xpu'"

# Files a Hugging Face tokenizer is read from; a folder with none of them has no tokenizer.
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model",
    "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "spm.model", "tekken.json", "qwen.tiktoken",
)
_TOKENIZER_PROBE = "Revenue: change +1,234. Net income: change -56."
_MAX_KEYS_NAMED = 3


def _first_line(err: BaseException) -> str:
    """``TypeName: first line of the message``, the short cause a ModelLoadError quotes."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    first = lines[0] if lines else "(no message)"
    if first.endswith(":") and len(lines) > 1:  # "validation error for ...:" then the detail
        first = f"{first} {lines[1]}"
    return f"{type(err).__name__}: {first}"


def _named(keys, limit: int = _MAX_KEYS_NAMED) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


# ---------------------------------------------------------------------- devices and dtypes
def resolve_device(device) -> str:
    """The torch device string ``device`` means on this machine, or ``ModelLoadError``.

    ``"auto"`` picks CUDA, else MPS, else CPU. Any other value must name a device this
    machine has: ``"cuda"`` without a CUDA GPU, ``"cuda:7"`` on a one-GPU machine, a
    name torch does not know (``"gpu"``, ``"tpu"``) and non-strings are refused.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise ModelLoadError(f"device must be a string, got {device!r} ({type(device).__name__}); {_DEVICE_ADVICE}")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        hint = _DEVICE_HINTS.get(device.strip().lower())
        if hint is None and device.strip().lower() != device:
            hint = device.strip().lower()
        did_you_mean = f" (did you mean {hint!r}?)" if hint else ""
        raise ModelLoadError(f"unknown device {device!r}{did_you_mean}; {_DEVICE_ADVICE}") from None
    if parsed.type == "cpu":
        return "cpu"
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible to torch")
            raise ModelLoadError(
                f"device {device!r} asks for a CUDA GPU, but {why} (torch {torch.__version__}); "
                "use device='cpu' (or 'auto', which picks what is there), or install a CUDA build of torch"
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ModelLoadError(
                f"device {device!r} does not exist: this machine has {count} CUDA GPU(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
        return str(parsed)
    if parsed.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ModelLoadError(f"device {device!r} needs Apple's MPS, which this machine lacks; use device='cpu'")
        return str(parsed)
    if parsed.type == "xpu":
        xpu = getattr(torch, "xpu", None)
        if xpu is None or not xpu.is_available():
            raise ModelLoadError(f"device {device!r} needs an Intel XPU, which this machine lacks; use device='cpu'")
        return str(parsed)
    if parsed.type == "meta":
        raise ModelLoadError("device 'meta' holds no weights, so the model could not run; use 'cpu' or 'cuda'")
    raise ModelLoadError(f"finwidget does not run models on {device!r}; {_DEVICE_ADVICE}")


def _resolve_dtype(dtype, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ModelLoadError(
                f"dtype {dtype} is not a floating-point type; use 'auto', 'float32', 'bfloat16' or 'float16' "
                "(to quantize, pass load_in_4bit=True)"
            )
        return dtype
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16
        if device == "mps":
            return torch.float16
        return torch.float32
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ModelLoadError(f"unknown dtype {dtype!r}; use 'auto', a torch.dtype or one of {sorted(_DTYPES)}")


# ---------------------------------------------------------------------- what the folder holds
def _looks_like_path(name: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else is meant as a folder."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _model_name(name_or_path) -> str:
    try:
        name = os.fspath(name_or_path)
    except TypeError:
        name = None
    if not isinstance(name, str) or not name.strip():
        raise ModelLoadError(
            f"model name or path must be a non-empty string or path, got {name_or_path!r}; "
            "pass a local folder or a hub id such as 'Qwen/Qwen2-7B-Instruct'"
        )
    return name


def _check_decoder_only(config, name: str) -> None:
    """Refuse configs that are not decoder-only causal LMs, by what they are."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = config.model_type
    if getattr(config, "is_encoder_decoder", False):
        raise ModelLoadError(
            f"{name!r} is a {kind!r} encoder-decoder model; finwidget reads the attention of a "
            "decoder-only causal LM such as Qwen2, so pass one of those"
        )
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ModelLoadError(
            f"{name!r} is a {kind!r} model, which is not a causal language model; "
            "finwidget needs a decoder-only model such as Qwen2"
        )
    if kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        raise ModelLoadError(
            f"{name!r} is a {kind!r} encoder (bidirectional attention, saved as "
            f"{_named(config.architectures or ['?'])}): every token sees the tokens after it, so its output "
            "at the answer position is no next-token prediction (and a masked-LM checkpoint has no causal "
            "LM head); pass a decoder-only model such as Qwen2"
        )


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files a local folder's weights are read from, in transformers' order:
    ``model.safetensors`` if present, else every shard its index names."""
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ModelLoadError(
                f"the weights index {str(index)!r} is unreadable ({_first_line(err)}); "
                "re-download or re-save the model"
            ) from None
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise ModelLoadError(
                f"the weights index {str(index)!r} lists shard(s) missing from the folder: {_named(missing)}; "
                "the download is incomplete: download the model again"
            )
        return [folder / s for s in shards]
    return []


def _check_weight_files(folder: Path) -> None:
    """Open each safetensors header: a corrupt or truncated file is named before any loading."""
    from safetensors import safe_open

    for path in _weight_files(folder):
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except Exception as err:  # noqa: BLE001 - safetensors raises its own SafetensorError and OSError
            raise ModelLoadError(
                f"the weights file {str(path)!r} is corrupt or truncated ({_first_line(err)}); "
                "download or save the model again"
            ) from None


def _load_tokenizer(source: str, name: str, local: Path | None):
    from transformers import AutoTokenizer

    if local is not None and not any((local / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"model folder {name!r} has no tokenizer files (none of {', '.join(_TOKENIZER_FILES[:4])}, ...); "
            "copy the tokenizer files of the model the weights came from into the folder "
            "(e.g. tokenizer.save_pretrained(folder))"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as err:  # noqa: BLE001 - tokenizers raise many types (json, rust, OSError)
        raise ModelLoadError(
            f"could not load the tokenizer from {name!r} ({_first_line(err)}); the tokenizer files "
            "are damaged or missing: copy them again from the model the weights came from"
        ) from None
    try:
        probe = tokenizer(_TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]
    except Exception as err:  # noqa: BLE001 - a tokenizer that cannot encode is unusable, whatever it raises
        raise ModelLoadError(f"the tokenizer of {name!r} cannot encode text ({_first_line(err)})") from None
    unknown = tokenizer.unk_token_id
    if len(tokenizer) < 2 or not probe or all(i == unknown for i in probe):
        raise ModelLoadError(
            f"the tokenizer of {name!r} is unusable: it has {len(tokenizer)} token(s) and reads "
            f"{_TOKENIZER_PROBE!r} as {probe!r}; copy the tokenizer files of the model the weights came from "
            "into the folder"
        )
    return tokenizer


def _check_loading_info(info: dict, name: str, config) -> None:
    """Refuse a model any of whose weights transformers had to initialise or throw away."""
    mismatched = info.get("mismatched_keys") or ()
    if mismatched:
        key, in_file, in_config = min(mismatched, key=lambda m: m[0])
        raise ModelLoadError(
            f"config.json of {name!r} does not fit its weights: {len(mismatched)} weight(s) have another "
            f"shape, e.g. {key} is {list(in_file)} in the weights but {list(in_config)} by the config; "
            "use the config.json saved with these weights"
        )
    missing = info.get("missing_keys") or ()
    if missing:
        head = [k for k in missing if k.startswith("lm_head")]
        what = "its LM head" if head and len(head) == len(missing) else f"{len(missing)} weight(s)"
        raise ModelLoadError(
            f"{name!r} has no saved weights for {what} ({_named(missing)}), so they would be freshly "
            "random initialised; the weights do not belong to this config (a base model without its "
            f"head, another architecture, or a config.json that does not fit, e.g. num_hidden_layers="
            f"{getattr(config, 'num_hidden_layers', '?')}): use the folder the model was saved to as a whole"
        )
    unexpected = info.get("unexpected_keys") or ()
    if unexpected:
        raise ModelLoadError(
            f"the weights of {name!r} hold {len(unexpected)} tensor(s) this config has no place for "
            f"({_named(unexpected)}); config.json does not fit the weights (e.g. num_hidden_layers="
            f"{getattr(config, 'num_hidden_layers', '?')}): use the config.json saved with these weights"
        )
    errors = info.get("error_msgs") or ()
    if errors:
        raise ModelLoadError(f"the weights of {name!r} did not load: {str(errors[0]).splitlines()[0]}")


_FINITE_CHECK_CHUNK = 1 << 24  # elements per isfinite call: a 16 MB temporary at most


def _non_finite_count(weight: torch.Tensor) -> int:
    """How many NaN/infinite values ``weight`` holds. A NaN or infinity anywhere makes the sum
    non-finite, so a finite sum (one fast reduction) proves there are none; only a non-finite
    sum (a bad value, or finite values overflowing) is counted element by element."""
    weight = weight.detach()
    total = weight.sum(dtype=torch.float32) if weight.element_size() < 4 else weight.sum()
    if bool(torch.isfinite(total)):
        return 0
    flat = weight.reshape(-1)
    return sum(int((~torch.isfinite(flat[start:start + _FINITE_CHECK_CHUNK])).sum())
               for start in range(0, flat.numel(), _FINITE_CHECK_CHUNK))


def _check_finite_weights(model, name: str) -> None:
    """Refuse weights holding NaN or infinity (a damaged or diverged checkpoint): every
    answer would be NaN. Quantized (integer) and offloaded (meta) tensors are skipped; the
    check reads each weight once, in chunks, so it needs no second copy of the model."""
    with torch.no_grad():
        for key, weight in model.named_parameters():
            if not weight.is_floating_point() or weight.device.type == "meta":
                continue
            count = _non_finite_count(weight)
            if count:
                raise ModelLoadError(
                    f"the weights of {name!r} are damaged: {key} holds {count} NaN or infinite value(s) "
                    f"of {weight.numel()}; download the model again (or, if you trained it, use a "
                    "checkpoint from before the loss diverged)"
                )


# ---------------------------------------------------------------------- the loader
def load_model(name_or_path: str | os.PathLike, device: str = "auto", dtype="auto",
               load_in_4bit: bool = False, **kwargs):
    """Load ``(model, tokenizer)`` for a Hugging Face decoder-only causal LM.

    Args:
        name_or_path: a local folder (with ``config.json``, weights and tokenizer
            files) or a hub id such as ``"Qwen/Qwen2-7B-Instruct"``.
        device: ``"auto"`` (CUDA with accelerate's ``device_map="auto"`` spreading the
            model over every visible GPU, else MPS, else CPU), or a device this machine
            has (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"xpu"``).
        dtype: ``"auto"`` (bfloat16 on CUDA, float16 on MPS, float32 on CPU), a
            floating-point ``torch.dtype`` or its name.
        load_in_4bit: quantize to 4 bits with bitsandbytes (CUDA only).
        **kwargs: passed on to ``AutoModelForCausalLM.from_pretrained``.

    Raises:
        ModelLoadError: the folder or id cannot be reached; it is not a decoder-only
            causal LM (an encoder, an encoder-decoder); a weight would be freshly
            initialised (missing LM head, config that does not fit the weights); the
            tokenizer is missing or unusable; a weights file is corrupt or truncated,
            or its weights hold NaN or infinity;
            ``device`` or ``dtype`` is not one this machine can use.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    name = _model_name(name_or_path)
    for own in ("output_loading_info", "ignore_mismatched_sizes"):
        if own in kwargs:
            raise ModelLoadError(
                f"load_model checks the loading itself and refuses models with mismatched or missing "
                f"weights, so it does not take {own}=; load with transformers directly if you need it"
            )
    resolved_device = resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, resolved_device)
    if load_in_4bit and not resolved_device.startswith("cuda"):
        raise ModelLoadError(f"load_in_4bit=True needs a CUDA GPU, but the device is {resolved_device!r}")

    local = Path(name).expanduser()
    if _looks_like_path(name) and not local.exists():
        raise ModelLoadError(
            f"model folder {name!r} does not exist; pass the folder that holds the model's "
            "config.json and weights, or a hub id such as 'Qwen/Qwen2-7B-Instruct'"
        )
    if local.is_file():
        raise ModelLoadError(
            f"{name!r} is a file; pass the folder that holds it with the model's config.json and tokenizer"
        )
    if local.is_dir() and not (local / "config.json").is_file():
        raise ModelLoadError(f"model folder {name!r} has no config.json; is it a Hugging Face model folder?")
    folder = local if local.is_dir() else None
    source = str(local) if folder is not None else name

    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as err:  # noqa: BLE001 - OSError, ValueError, json and dataclass validation errors
        if folder is not None:
            raise ModelLoadError(
                f"the config.json of model folder {name!r} is damaged or inconsistent ({_first_line(err)}); "
                "Fix: replace it with the config.json saved with these weights"
            ) from None
        raise ModelLoadError(
            f"could not load a model config from {name!r}: {_first_line(err)} "
            "Fix: check the spelling, pass a local folder, or (for a hub id) make sure this machine "
            "can reach the hub and you are logged in if the model is gated (`hf auth login`); "
            "offline, download it first and pass its folder."
        ) from None
    _check_decoder_only(config, name)
    if folder is not None:
        _check_weight_files(folder)
    tokenizer = _load_tokenizer(source, name, folder)

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
        # Mismatched shapes are reported through the loading info (and refused below)
        # rather than as transformers' RuntimeError after its own report.
        model, info = AutoModelForCausalLM.from_pretrained(
            source, output_loading_info=True, ignore_mismatched_sizes=True, **load_kwargs)
    except FinwidgetError:
        raise
    except Exception as err:  # noqa: BLE001 - OSError, SafetensorError, RuntimeError, torch OOM, ...
        raise ModelLoadError(
            f"could not load the model weights from {name!r} ({_first_line(err)}); check that the weights "
            "files are complete and were saved with this config.json"
        ) from None
    _check_loading_info(info, name, config)
    _check_finite_weights(model, name)
    embedding_rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > embedding_rows:
        raise ModelLoadError(
            f"the tokenizer of {name!r} has {len(tokenizer)} tokens but the model's embedding only "
            f"{embedding_rows} rows: the tokenizer belongs to another model; use the tokenizer saved with these weights"
        )
    if "device_map" not in load_kwargs:
        try:
            model.to(resolved_device)
        except Exception as err:  # noqa: BLE001 - torch.OutOfMemoryError, driver errors
            raise ModelLoadError(
                f"could not move {name!r} to {resolved_device!r} ({_first_line(err)}); try "
                "dtype='bfloat16', load_in_4bit=True, or device='cpu'"
            ) from None
    model.eval()
    return model, tokenizer
