"""A stub adapter whose "attention" points at bright objects: pipeline logic without a model.

Each vision token's embedding is the brightest pixel of its cell; the last prompt
token attends to a token in proportion to ``exp(sharpness * brightness)``. So the
focus should walk down the pyramid to the bright ships of a synthetic scene, and
selection can be tested apart from model quality. ``generate`` answers with the
number of bright tokens it was given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lrsvqa.models.base import (
    Adapter,
    Capabilities,
    Generation,
    PreparedInputs,
    VisionSegment,
    VisionTokens,
)

PREFIX_TOKENS = 4  # stand-in for a system prompt


class StubAdapter(Adapter):
    family = "stub"
    model_types = ()

    def __init__(self, tile_size: int = 56, patch_size: int = 14, sharpness: float = 12.0):
        super().__init__(None, None, model_id="stub", revision="stub-1")
        self.tile_size = tile_size
        self.patch_size = patch_size
        self.sharpness = sharpness
        self.encoded_images = 0
        self.calls: list[str] = []

    @property
    def capabilities(self) -> Capabilities:
        g = self.tile_size // self.patch_size
        return Capabilities(
            family="stub",
            tile_size=self.tile_size,
            patch_size=self.patch_size,
            tokens_per_tile=(g, g),
            thumbnail_size=self.tile_size,
            mrope=True,
            newline_tokens=False,
            context_length=1_000_000,
            hidden_size=8,
            num_layers=4,
            num_heads=2,
            num_kv_heads=2,
            intermediate_size=16,
            vision_flops_per_tile=1e6,
        )

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def encode(self, images: Sequence[np.ndarray]) -> list[VisionTokens]:
        self.calls.append("encode")
        out = []
        for image in images:
            h, w = image.shape[:2]
            gr, gc = h // self.patch_size, w // self.patch_size
            cells = image[: gr * self.patch_size, : gc * self.patch_size].reshape(
                gr, self.patch_size, gc, self.patch_size, 3
            )
            brightest = cells.max(axis=(1, 3, 4)).astype(np.float32) / 255.0
            mean = cells.mean(axis=(1, 3)).reshape(gr * gc, 3).astype(np.float32) / 255.0
            embeds = np.concatenate([brightest.reshape(-1, 1), mean], axis=1)
            out.append(VisionTokens(torch.from_numpy(embeds), (gr, gc)))
            self.encoded_images += 1
        return out

    def build_inputs(
        self, segments: Sequence[VisionSegment], question: str, *, system: str | None = None
    ) -> PreparedInputs:
        rows: list[torch.Tensor] = [torch.zeros(PREFIX_TOKENS, 4)]
        seg_ids, idx_ids = [], []
        for s, segment in enumerate(segments):
            keep = torch.arange(segment.tokens.n) if segment.keep is None else segment.keep.long()
            rows.append(segment.tokens.embeds[keep])
            seg_ids.append(torch.full((len(keep),), s))
            idx_ids.append(keep)
        n_text = max(1, len(question.split()))
        rows.append(torch.zeros(n_text, 4))
        embeds = torch.cat(rows)[None]
        length = embeds.shape[1]
        n_vision = length - PREFIX_TOKENS - n_text
        positions = torch.arange(length)
        return PreparedInputs(
            inputs_embeds=embeds,
            attention_mask=torch.ones(1, length, dtype=torch.long),
            position_ids=positions[None].expand(3, 1, length).clone(),
            input_ids=torch.zeros(1, length, dtype=torch.long),
            vision_positions=torch.arange(PREFIX_TOKENS, PREFIX_TOKENS + n_vision),
            vision_segment=torch.cat(seg_ids) if seg_ids else torch.zeros(0, dtype=torch.long),
            vision_index=torch.cat(idx_ids) if idx_ids else torch.zeros(0, dtype=torch.long),
            separator_positions=torch.zeros(0, dtype=torch.long),
        )

    def attention(self, inputs: PreparedInputs, layers: Sequence[int]) -> torch.Tensor:
        self.calls.append("attention")
        brightness = inputs.inputs_embeds[0, :, 0].double()
        logits = self.sharpness * brightness
        weights = torch.softmax(logits, dim=0)[inputs.vision_positions]
        heads = self.capabilities.num_heads
        return weights[None, None].expand(len(layers), heads, -1).clone()

    def generate(
        self,
        inputs: PreparedInputs,
        *,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        output_scores: bool = False,
    ) -> Generation:
        self.calls.append("generate")
        bright = inputs.inputs_embeds[0, inputs.vision_positions, 0]
        n = int((bright > 0.7).sum())
        return Generation(text=str(n), token_ids=[n], scores=None, prompt_tokens=inputs.length)
