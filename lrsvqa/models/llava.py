"""LLaVA-1.5: a CLIP ViT-L/14 at 336 px -> 24 x 24 = 576 tokens per image, no newline.

Positions are 1-D (0..L-1 in sequence order); a dropped token simply vanishes from the
sequence.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from transformers import LlavaProcessor

from lrsvqa.models.base import Capabilities, VisionTokens
from lrsvqa.models.hf import HFAdapter


def vit_flops_per_image(v: Any, *, cls_token: bool) -> float:
    """Matmul FLOPs of a CLIP / SigLIP tower on one image."""
    grid = v.image_size // v.patch_size
    n = grid * grid + (1 if cls_token else 0)
    d = v.hidden_size
    per_layer = 2 * n * 4 * d * d + 2 * 2 * n * n * d + 2 * 2 * n * d * v.intermediate_size
    return float(2 * grid * grid * 3 * v.patch_size**2 * d + v.num_hidden_layers * per_layer)


class LlavaAdapter(HFAdapter):
    family: ClassVar[str] = "llava"
    model_types: ClassVar[tuple[str, ...]] = ("llava",)
    model_class_name: ClassVar[str] = "LlavaForConditionalGeneration"
    processor_class: ClassVar[type[Any]] = LlavaProcessor
    reference_model_id: ClassVar[str] = "llava-hf/llava-1.5-7b-hf"
    newline: ClassVar[bool] = False
    single_placeholder: ClassVar[bool] = True
    cls_token: ClassVar[bool] = True

    @classmethod
    def reference_config(cls) -> Any:
        from transformers import LlavaConfig

        return LlavaConfig(text_config={"model_type": "llama", "max_position_embeddings": 4096})

    @classmethod
    def capabilities_for(cls, config: Any) -> Capabilities:
        t, v = config.text_config, config.vision_config
        grid = v.image_size // v.patch_size
        proj = 2 * grid * grid * (v.hidden_size * t.hidden_size + t.hidden_size * t.hidden_size)
        return Capabilities(
            family=cls.family,
            tile_size=int(v.image_size),
            patch_size=int(v.patch_size),
            tokens_per_tile=(grid, grid),
            thumbnail_size=int(v.image_size),
            mrope=False,
            newline_tokens=cls.newline,
            context_length=int(t.max_position_embeddings),
            hidden_size=int(t.hidden_size),
            num_layers=int(t.num_hidden_layers),
            num_heads=int(t.num_attention_heads),
            num_kv_heads=int(t.num_key_value_heads or t.num_attention_heads),
            intermediate_size=int(t.intermediate_size),
            vision_flops_per_tile=vit_flops_per_image(v, cls_token=cls.cls_token) + proj,
        )

    def separator_embedding(self) -> torch.Tensor:
        """The newline of the release format (LLaVA-1.5 has none of its own)."""
        if not self.input_format.newline_rows:
            return super().separator_embedding()
        cached = getattr(self, "_newline", None)
        if cached is None:
            from lrsvqa.models.release_format import newline_stand_in

            cached = self._newline = newline_stand_in(self.model, self.tokenizer)
        return cached

    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) pixels -> (N, grid*grid, hidden) LLM-space features, stock selection."""
        cfg = self.model.config
        tower = self.model.model.vision_tower
        dtype = next(tower.parameters()).dtype
        out = tower(
            pixel_values.to(self.device, dtype), output_hidden_states=True, return_dict=True
        )
        layer = cfg.vision_feature_layer
        if isinstance(layer, int):
            feats = out.hidden_states[layer]
        else:
            feats = torch.cat([out.hidden_states[i] for i in layer], dim=-1)
        if cfg.vision_feature_select_strategy == "default":
            feats = feats[:, 1:]
        return self.model.model.multi_modal_projector(feats)

    def encode_images(self, images: list[np.ndarray]) -> list[VisionTokens]:
        batch = self.processor.image_processor(
            images=[self.to_pil(im) for im in images], return_tensors="pt"
        )
        feats = self.vision_features(batch["pixel_values"])
        grid = self.capabilities.tokens_per_tile
        return [VisionTokens(embeds=f, grid=grid) for f in feats]
