"""Model adapters: one per LVLM family, on stock transformers classes.

``import lrsvqa.models`` is cheap; torch and transformers load on first real use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lrsvqa.models.base import (
    Adapter,
    Capabilities,
    Generation,
    PreparedInputs,
    VisionSegment,
    VisionTokens,
)
from lrsvqa.models.loading import DEFAULT_MODEL_ID
from lrsvqa.models.registry import FAMILIES, adapter_class, families

if TYPE_CHECKING:
    from lrsvqa.models.hf import HFAdapter


def from_pretrained(
    model_id: str = DEFAULT_MODEL_ID,
    revision: str | None = None,
    device: str = "auto",
    dtype: Any = "auto",
    family: str | None = None,
    **kwargs: Any,
) -> HFAdapter:
    """Load a model by hub id, local folder or ``tiny/<family>``; see ``loading``."""
    from lrsvqa.models import loading

    return loading.from_pretrained(
        model_id, revision=revision, device=device, dtype=dtype, family=family, **kwargs
    )


__all__ = [
    "DEFAULT_MODEL_ID",
    "FAMILIES",
    "Adapter",
    "Capabilities",
    "Generation",
    "PreparedInputs",
    "VisionSegment",
    "VisionTokens",
    "adapter_class",
    "families",
    "from_pretrained",
]
