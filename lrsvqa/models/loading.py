"""Load an adapter: ``tiny/<family>``, a local folder, or a hub id already in the cache.

Weights are read from safetensors only and no remote code runs. With ``HF_HUB_OFFLINE=1``
nothing is fetched: a model missing from the local cache is a ``ModelNotFoundError`` that
says how to get it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrsvqa.errors import ConfigError, ModelError, ModelNotFoundError
from lrsvqa.models import registry, tiny

if TYPE_CHECKING:
    from lrsvqa.models.hf import HFAdapter

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "Qwen/Qwen2.5-VL-7B-Instruct"
_ALLOW = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]


def hub_offline() -> bool:
    raw = os.environ.get("HF_HUB_OFFLINE", "")
    if raw.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover
        return False


def _not_found(model_id: str, offline: bool) -> ModelNotFoundError:
    if offline:
        return ModelNotFoundError(
            f"model {model_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
            f"set; run `hf download {model_id}` (or `huggingface-cli download {model_id}`) on "
            "a machine with internet and copy the cache, or unset HF_HUB_OFFLINE"
        )
    return ModelNotFoundError(
        f"model {model_id!r} was not found on the Hugging Face hub; check the id "
        "(e.g. Qwen/Qwen2.5-VL-7B-Instruct) or pass a local folder"
    )


MICRO_PREFIX = "micro/"
MICRO_ROOT = Path(__file__).parent / "micro"


def micro_models() -> list[str]:
    """The micro models shipped inside the package (trained here on synthetic scenes)."""
    if not MICRO_ROOT.is_dir():
        return []
    return sorted(
        MICRO_PREFIX + p.name for p in MICRO_ROOT.iterdir() if (p / "model.safetensors").is_file()
    )


def micro_folder(model_id: str) -> Path:
    name = model_id[len(MICRO_PREFIX) :]
    folder = MICRO_ROOT / name
    if not name or not (folder / "model.safetensors").is_file():
        shipped = ", ".join(micro_models()) or "none"
        raise ModelNotFoundError(
            f"unknown micro model {model_id!r}; shipped micro models: {shipped}"
        )
    return folder


def _micro_revision(folder: Path) -> str:
    import hashlib

    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    return f"micro-{digest[:12]}"


def resolve_path(model_id: str, revision: str | None = None) -> tuple[Path, str | None]:
    """The local folder of ``model_id`` and its resolved revision (commit hash if known)."""
    if model_id.startswith(tiny.TINY_PREFIX):
        family = model_id[len(tiny.TINY_PREFIX) :]
        if family not in tiny.TINY_FAMILIES:
            raise ModelError(
                f"unknown tiny model {model_id!r}; choose one of "
                + ", ".join(tiny.TINY_PREFIX + f for f in tiny.TINY_FAMILIES)
            )
        return tiny.ensure(family), f"tiny-{tiny.TINY_VERSION}"
    if model_id.startswith(MICRO_PREFIX):
        micro = micro_folder(model_id)
        return micro, _micro_revision(micro)
    local = Path(model_id).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelNotFoundError(f"{local} has no config.json; it is not a model folder")
        return local, revision
    offline = hub_offline()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        folder = snapshot_download(
            model_id, revision=revision, allow_patterns=_ALLOW, local_files_only=offline
        )
    except HFValidationError as exc:
        raise ModelNotFoundError(
            f"{model_id!r} is neither a local folder nor a valid hub id ({exc})"
        ) from None
    except Exception as exc:  # hub errors have many classes; all mean "not here"
        from huggingface_hub.errors import (
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        if isinstance(exc, GatedRepoError):
            raise ModelNotFoundError(
                f"model {model_id!r} is gated; accept its licence on the hub and log in"
            ) from None
        if isinstance(exc, (LocalEntryNotFoundError, RepositoryNotFoundError)):
            raise _not_found(model_id, offline) from None
        if isinstance(exc, RevisionNotFoundError):
            raise ModelNotFoundError(f"model {model_id!r} has no revision {revision!r}") from None
        raise ModelError(f"cannot fetch {model_id!r}: {exc}") from exc
    path = Path(folder)
    commit = path.name if path.parent.name == "snapshots" else revision
    return path, commit


def _device_dtype(device: str, dtype: Any) -> tuple[Any, Any]:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dtype == "auto":
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dev, dtype
    named = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in named:
        raise ConfigError(f"unknown dtype {dtype!r}; use auto, {', '.join(named)}")
    return dev, named[dtype]


def check_tokenizer_files(path: Path) -> None:
    """ModelError naming the packages when only a SentencePiece model can be read."""
    import importlib.util

    if (path / "tokenizer.json").is_file() or not (path / "tokenizer.model").is_file():
        return
    missing = [
        name
        for name, module in (("sentencepiece", "sentencepiece"), ("protobuf", "google.protobuf"))
        if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise ModelError(
            f"{path} has a SentencePiece tokenizer.model but no tokenizer.json; reading it needs "
            f"{' and '.join(missing)}: pip install 'lrsvqa[sentencepiece]' (or "
            f"pip install {' '.join(missing)}), or save a tokenizer.json into the folder"
        )


def from_pretrained(
    model_id: str = DEFAULT_MODEL_ID,
    revision: str | None = None,
    device: str = "auto",
    dtype: Any = "auto",
    family: str | None = None,
    *,
    attn_implementation: str | None = None,
) -> HFAdapter:
    """Load ``model_id`` behind the adapter of its family (read from ``config.json``)."""
    import json

    import transformers

    if family is not None:
        registry.adapter_class(family)  # unknown family fails before any build or download
    path, resolved = resolve_path(model_id, revision)
    check_tokenizer_files(path)
    try:
        config_dict = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path / 'config.json'} cannot be read: {exc}") from None
    fam = family or registry.family_for_model_type(config_dict.get("model_type"), model_id=model_id)
    cls = registry.adapter_class(fam)
    if resolved is None:
        resolved = config_dict.get("_commit_hash")
    dev, torch_dtype = _device_dtype(device, dtype)
    model_cls = getattr(transformers, cls.model_class_name)
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype,
        "use_safetensors": True,
        "trust_remote_code": False,
    }
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = model_cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load {model_id!r} as {cls.model_class_name}: {exc}") from None
    model.to(dev).eval()
    try:
        # The PIL image backend whether or not torchvision is installed: the pixels (and so
        # the answers) never depend on an optional package.
        processor = cls.processor_class.from_pretrained(
            path, trust_remote_code=False, backend="pil"
        )
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"cannot load the processor of {model_id!r}: {exc}") from None
    resolved = resolved or getattr(model.config, "_commit_hash", None)
    log.info("loaded %s (%s, revision %s) on %s", model_id, fam, resolved, dev)
    return cls(model, processor, model_id=model_id, revision=resolved)
