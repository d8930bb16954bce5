"""Image-only variants of the stock processors that also carry a video processor.

Without torchvision, transformers 5 cannot build a video processor, and
``AutoProcessor.from_pretrained`` on a stock Qwen2-VL / Qwen2.5-VL / LLaVA-OneVision folder
either fails ("Can't load video processor") or silently returns the bare tokenizer. These
subclasses drop the video attribute and nothing else; images go through the stock code.
They are registered with ``AutoProcessor`` under private config keys (the public registration
API), so a folder whose ``processor_config.json`` names one of them loads through stock
``AutoProcessor`` as long as ``lrsvqa.models`` has been imported.
"""

from __future__ import annotations

from typing import Any

from transformers import (
    AutoProcessor,
    LlavaOnevisionProcessor,
    Qwen2_5_VLProcessor,
    Qwen2VLProcessor,
)


class _ImageOnly:
    @classmethod
    def get_attributes(cls) -> list[str]:
        # The stock __init__ passes video_processor positionally; ProcessorMixin zips the
        # positional args with these attributes, so the (None) video processor is dropped.
        return ["image_processor", "tokenizer"]


class Qwen2VLImageOnlyProcessor(_ImageOnly, Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without the video processor."""


class Qwen2_5_VLImageOnlyProcessor(_ImageOnly, Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` without the video processor."""


class LlavaOnevisionImageOnlyProcessor(_ImageOnly, LlavaOnevisionProcessor):
    """``LlavaOnevisionProcessor`` without the video processor."""


IMAGE_ONLY: dict[str, type[Any]] = {
    "Qwen2VLProcessor": Qwen2VLImageOnlyProcessor,
    "Qwen2_5_VLProcessor": Qwen2_5_VLImageOnlyProcessor,
    "LlavaOnevisionProcessor": LlavaOnevisionImageOnlyProcessor,
}


def _register() -> None:
    for cls in IMAGE_ONLY.values():
        # A private key class per processor: stock model types keep their own mapping.
        key = type(f"_LrsvqaKey{cls.__name__}", (), {})
        AutoProcessor.register(key, cls, exist_ok=True)


_register()
