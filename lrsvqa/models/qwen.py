"""Qwen2-VL and Qwen2.5-VL: 14 px patches merged 2x2, so one LLM token covers 28x28 px.

Positions are 3-D M-RoPE. Each block (a run of segments of one group) starts at the current
text position ``s`` like a stock image: a token in cell (row, col) of the group's
whole-scene grid gets (t, h, w) = (s, s + row, s + col). The text after the block continues
from the largest id of the block's *full frame* + 1, i.e. ``s + max(rows, cols)`` of the
frame spanned by the group's segments, whether or not their tokens are kept (not from the
largest *kept* id + 1). So one fully kept image gets exactly stock ``get_rope_index`` ids,
and a kept subset keeps every token's (and the following text's) ids from the full input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from lrsvqa.models.base import (
    Capabilities,
    PreparedInputs,
    VisionTokens,
    declared_focus_layers,
    model_declared,
)
from lrsvqa.models.hf import HFAdapter
from lrsvqa.models.layout import ImageBlock, Placed
from lrsvqa.models.processors import Qwen2_5_VLImageOnlyProcessor, Qwen2VLImageOnlyProcessor

DEFAULT_TILE = 448  # any multiple of 28 works; 448 -> 16 x 16 LLM tokens


def _vit_flops(n: int, width: int, depth: int, mlp: float, heads_ctx: list[int]) -> float:
    """Matmul FLOPs of a ViT over ``n`` tokens.

    ``mlp`` is the MLP's FLOPs per token; ``heads_ctx[i]`` the keys each query sees in block i.
    """
    total = 0.0
    for ctx in heads_ctx[:depth]:
        total += 2 * n * 4 * width * width  # q, k, v, o projections
        total += 2 * 2 * n * ctx * width  # scores and weighted sum
        total += mlp * n
    return total


class Qwen2VLAdapter(HFAdapter):
    family: ClassVar[str] = "qwen2_vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_vl",)
    model_class_name: ClassVar[str] = "Qwen2VLForConditionalGeneration"
    processor_class: ClassVar[type[Any]] = Qwen2VLImageOnlyProcessor
    reference_model_id: ClassVar[str] = "Qwen/Qwen2-VL-7B-Instruct"

    @classmethod
    def reference_config(cls) -> Any:
        from transformers import Qwen2VLConfig

        return Qwen2VLConfig(
            text_config={
                "hidden_size": 3584,
                "intermediate_size": 18944,
                "num_hidden_layers": 28,
                "num_attention_heads": 28,
                "num_key_value_heads": 4,
                "max_position_embeddings": 32768,
                "vocab_size": 152064,
            },
            vision_config={"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "num_heads": 16},
        )

    @classmethod
    def _vision_flops(cls, v: Any, tile: int) -> float:
        n = (tile // v.patch_size) ** 2
        d = v.embed_dim
        flops = 2.0 * n * 3 * v.temporal_patch_size * v.patch_size**2 * d
        flops += _vit_flops(n, d, v.depth, 2 * 2 * d * d * v.mlp_ratio, [n] * v.depth)
        m2 = v.spatial_merge_size**2
        flops += 2.0 * (n / m2) * (m2 * d * m2 * d + m2 * d * v.hidden_size)
        return flops

    @classmethod
    def capabilities_for(cls, config: Any) -> Capabilities:
        t, v = config.text_config, config.vision_config
        side = v.patch_size * v.spatial_merge_size
        declared = model_declared(config)
        wanted = int(declared.get("tile_size", DEFAULT_TILE))
        tile = max(side, wanted - wanted % side)
        grid = tile // side
        return Capabilities(
            family=cls.family,
            tile_size=tile,
            patch_size=side,
            tokens_per_tile=(grid, grid),
            thumbnail_size=tile,
            mrope=True,
            newline_tokens=False,
            context_length=int(t.max_position_embeddings),
            hidden_size=int(t.hidden_size),
            num_layers=int(t.num_hidden_layers),
            num_heads=int(t.num_attention_heads),
            num_kv_heads=int(t.num_key_value_heads or t.num_attention_heads),
            intermediate_size=int(t.intermediate_size),
            vision_flops_per_tile=float(cls._vision_flops(v, tile)),
            focus_layers=declared_focus_layers(declared),
        )

    def encode_images(self, images: list[np.ndarray]) -> list[VisionTokens]:
        batch = self.processor.image_processor(
            images=[self.to_pil(im) for im in images], return_tensors="pt"
        )
        thw = batch["image_grid_thw"].to(self.device)
        feats = self.model.model.get_image_features(
            pixel_values=batch["pixel_values"].to(self.device),
            image_grid_thw=thw,
            return_dict=True,
        ).pooler_output
        merge = self.model.config.vision_config.spatial_merge_size
        return [
            VisionTokens(embeds=f, grid=(int(g[1]) // merge, int(g[2]) // merge))
            for f, g in zip(feats, thw.tolist(), strict=True)
        ]

    def position_ids(self, placed: Sequence[Placed], blocks: Sequence[ImageBlock]) -> torch.Tensor:
        length = len(placed)
        pos = torch.zeros(3, length, dtype=torch.long)
        cur = 0
        i = 0
        while i < length:
            block = placed[i].block
            if block is None:  # text
                pos[:, i] = cur
                cur += 1
                i += 1
                continue
            start = cur
            while i < length and placed[i].block == block:
                entry = placed[i].entry
                assert entry is not None  # every image position has its layout entry
                pos[0, i] = start
                pos[1, i] = start + entry.row
                pos[2, i] = start + entry.col
                i += 1
            rows, cols = blocks[block].extent
            cur = start + max(rows, cols)
        return pos.unsqueeze(1)

    def generation_position_ids(self, inputs: PreparedInputs) -> torch.Tensor:
        # Stock generate passes [text; t; h; w] (4, batch, L); the text row is 0..L-1.
        text = torch.arange(inputs.length, device=inputs.position_ids.device).view(1, 1, -1)
        return torch.cat([text, inputs.position_ids], dim=0)


class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    family: ClassVar[str] = "qwen2_5_vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_5_vl",)
    model_class_name: ClassVar[str] = "Qwen2_5_VLForConditionalGeneration"
    processor_class: ClassVar[type[Any]] = Qwen2_5_VLImageOnlyProcessor
    reference_model_id: ClassVar[str] = "Qwen/Qwen2.5-VL-7B-Instruct"

    @classmethod
    def reference_config(cls) -> Any:
        from transformers import Qwen2_5_VLConfig

        return Qwen2_5_VLConfig(
            text_config={
                "hidden_size": 3584,
                "intermediate_size": 18944,
                "num_hidden_layers": 28,
                "num_attention_heads": 28,
                "num_key_value_heads": 4,
                "max_position_embeddings": 128000,
                "vocab_size": 152064,
            },
            vision_config={
                "depth": 32,
                "hidden_size": 1280,
                "intermediate_size": 3420,
                "num_heads": 16,
                "out_hidden_size": 3584,
                "fullatt_block_indexes": [7, 15, 23, 31],
            },
        )

    @classmethod
    def _vision_flops(cls, v: Any, tile: int) -> float:
        n = (tile // v.patch_size) ** 2
        d = v.hidden_size
        window = min(n, (v.window_size // v.patch_size) ** 2)
        ctx = [n if i in set(v.fullatt_block_indexes) else window for i in range(v.depth)]
        flops = 2.0 * n * 3 * v.temporal_patch_size * v.patch_size**2 * d
        flops += _vit_flops(n, d, v.depth, 2 * 3 * d * v.intermediate_size, ctx)
        m2 = v.spatial_merge_size**2
        flops += 2.0 * (n / m2) * (m2 * d * m2 * d + m2 * d * v.out_hidden_size)
        return flops
