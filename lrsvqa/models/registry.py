"""Model families: name -> adapter class, and transformers ``model_type`` -> family.

Adapter modules import torch and transformers, so classes are resolved on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from lrsvqa.errors import ModelError

if TYPE_CHECKING:
    from lrsvqa.models.hf import HFAdapter

# family -> "module:Class"; the order is the order ``lrsvqa models`` shows.
FAMILIES: dict[str, str] = {
    "qwen2_vl": "lrsvqa.models.qwen:Qwen2VLAdapter",
    "qwen2_5_vl": "lrsvqa.models.qwen:Qwen2_5_VLAdapter",
    "llava": "lrsvqa.models.llava:LlavaAdapter",
    "llava_next": "lrsvqa.models.llava_next:LlavaNextAdapter",
    "llava_onevision": "lrsvqa.models.llava_next:LlavaOnevisionAdapter",
}

# transformers model_type -> family (one entry per type each adapter serves)
MODEL_TYPES: dict[str, str] = {
    "qwen2_vl": "qwen2_vl",
    "qwen2_5_vl": "qwen2_5_vl",
    "llava": "llava",
    "llava_next": "llava_next",
    "llava_onevision": "llava_onevision",
}


def families() -> list[str]:
    return list(FAMILIES)


def adapter_class(family: str) -> type[HFAdapter]:
    spec = FAMILIES.get(family)
    if spec is None:
        raise ModelError(
            f"unknown model family {family!r}; supported families: {', '.join(FAMILIES)}"
        )
    module, _, name = spec.partition(":")
    cls: type[HFAdapter] = getattr(importlib.import_module(module), name)
    return cls


def family_for_model_type(model_type: str | None, *, model_id: str = "") -> str:
    family = MODEL_TYPES.get(model_type or "")
    if family is None:
        where = f"{model_id} has " if model_id else ""
        raise ModelError(
            f"{where}model_type {model_type!r}, which is not a supported vision-language model "
            f"(text-only or unknown architecture); supported families: {', '.join(FAMILIES)}"
        )
    return family
