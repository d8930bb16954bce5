"""LLaVA-NeXT (1.6) and LLaVA-OneVision: anyres tiles with an ``image_newline`` per row.

Stock packing of one image: [base image tokens, no newline] then the grid of anyres crops
laid out as one whole-scene token grid, "unpadded" (rows/columns that only cover padding
are cut) and ended row by row with the newline embedding. ``stock_segments`` expresses that
exactly as segments: the base image is a thumbnail segment (group 0); every crop is a tile
segment of group 1 at its place in the scene grid, and unpadding is a ``keep`` mask (computed
by the stock ``unpad_image`` on an index grid). ``encode`` of a tile resizes it to the
tower's input size (336 / 384 px) and normalises it like the stock processor.
"""

from __future__ import annotations

import math
import sys
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import LlavaNextProcessor

from lrsvqa.errors import ModelError
from lrsvqa.models.base import VisionSegment, VisionTokens
from lrsvqa.models.llava import LlavaAdapter
from lrsvqa.models.processors import LlavaOnevisionImageOnlyProcessor


class LlavaNextAdapter(LlavaAdapter):
    family: ClassVar[str] = "llava_next"
    model_types: ClassVar[tuple[str, ...]] = ("llava_next",)
    model_class_name: ClassVar[str] = "LlavaNextForConditionalGeneration"
    processor_class: ClassVar[type[Any]] = LlavaNextProcessor
    reference_model_id: ClassVar[str] = "llava-hf/llava-v1.6-vicuna-7b-hf"
    newline: ClassVar[bool] = True

    @classmethod
    def reference_config(cls) -> Any:
        from transformers import LlavaNextConfig

        return LlavaNextConfig(text_config={"model_type": "llama", "max_position_embeddings": 4096})

    def separator_embedding(self) -> torch.Tensor:
        return self.model.model.image_newline

    def _pixels(self, images: list[np.ndarray]) -> torch.Tensor:
        from PIL import Image

        ip = self.processor.image_processor
        side = self.model.config.vision_config.image_size
        mean = torch.tensor(ip.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(ip.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        arrays = [
            np.asarray(self.to_pil(im).resize((side, side), Image.Resampling.BICUBIC))
            for im in images
        ]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() * ip.rescale_factor
        return (x - mean) / std

    def encode_images(self, images: list[np.ndarray]) -> list[VisionTokens]:
        feats = self.vision_features(self._pixels(images))
        grid = self.capabilities.tokens_per_tile
        return [VisionTokens(embeds=f, grid=grid) for f in feats]

    def _check_packing(self, rows: int, cols: int, grid: int) -> None:
        """Stock packing steps that a keep mask cannot express (none for LLaVA-NeXT)."""

    def stock_segments(self, image: np.ndarray) -> list[VisionSegment]:
        cfg = self.model.config
        batch = self.processor.image_processor(
            images=[self.to_pil(self.check_image(image))], return_tensors="pt"
        )
        size = batch["image_sizes"][0]
        with torch.no_grad():
            feats = self.vision_features(batch["pixel_values"][0])
        grid = cfg.vision_config.image_size // cfg.vision_config.patch_size
        modeling = sys.modules[type(self.model.model).__module__]
        n_rows, n_cols = modeling.get_anyres_image_grid_shape(
            size.tolist(), cfg.image_grid_pinpoints, cfg.vision_config.image_size
        )
        index = torch.arange(n_rows * grid * n_cols * grid).view(1, n_rows * grid, n_cols * grid)
        kept_grid = modeling.unpad_image(index, size)
        self._check_packing(int(kept_grid.shape[1]), int(kept_grid.shape[2]), grid)
        kept = torch.zeros(index.numel(), dtype=torch.bool)
        kept[kept_grid.flatten()] = True
        kept = kept.view(n_rows * grid, n_cols * grid)
        segments = [VisionSegment(VisionTokens(feats[0], (grid, grid)), kind="thumbnail", group=0)]
        for p in range(n_rows * n_cols):
            pr, pc = divmod(p, n_cols)
            local = kept[pr * grid : (pr + 1) * grid, pc * grid : (pc + 1) * grid].flatten()
            keep = torch.nonzero(local).flatten()
            segments.append(
                VisionSegment(
                    VisionTokens(feats[1 + p], (grid, grid)),
                    keep=keep,
                    offset=(pr * grid, pc * grid),
                    group=1,
                    kind="tile",
                )
            )
        return segments


class LlavaOnevisionAdapter(LlavaNextAdapter):
    family: ClassVar[str] = "llava_onevision"
    model_types: ClassVar[tuple[str, ...]] = ("llava_onevision",)
    model_class_name: ClassVar[str] = "LlavaOnevisionForConditionalGeneration"
    processor_class: ClassVar[type[Any]] = LlavaOnevisionImageOnlyProcessor
    reference_model_id: ClassVar[str] = "llava-hf/llava-onevision-qwen2-7b-ov-hf"
    cls_token: ClassVar[bool] = False

    @classmethod
    def reference_config(cls) -> Any:
        from transformers import LlavaOnevisionConfig

        return LlavaOnevisionConfig(
            text_config={
                "model_type": "qwen2",
                "hidden_size": 3584,
                "intermediate_size": 18944,
                "num_hidden_layers": 28,
                "num_attention_heads": 28,
                "num_key_value_heads": 4,
                "max_position_embeddings": 32768,
                "vocab_size": 152128,
            },
        )

    def _check_packing(self, rows: int, cols: int, grid: int) -> None:
        # Stock OneVision bilinearly shrinks an unpadded grid above anyres_max_N crops;
        # interpolated features are not a subset of the crops' tokens.
        max_crops = int(self.model.config.vision_aspect_ratio.removeprefix("anyres_max_"))
        if math.sqrt(rows * cols / (max_crops * grid * grid)) > 1.1:
            raise ModelError(
                f"llava_onevision: a {rows}x{cols} token grid is above anyres_max_{max_crops}; "
                "the stock model interpolates it, which segments cannot reproduce"
            )
