"""What every adapter on a stock transformers class shares.

Input layout (``build_inputs``): segments are cut into *blocks* (runs of consecutive segments
with the same ``group``); a block's kept tokens go in the raster order of the group's
whole-scene token grid (row, then column; ties keep segment order). Qwen renders the chat
template with one image per block (each its own ``<|vision_start|>..<|vision_end|>``);
LLaVA families render one ``<image>`` and put all blocks there in order, as the stock
LLaVA-NeXT packs base image + anyres grid of one image. Families with newline
tokens (LLaVA-NeXT / OneVision) end every scene row of a *tile* block that still holds at
least one kept token with the model's ``image_newline`` embedding; a row whose tokens were
all dropped loses its newline too (exactly stock "unpad" when a padded band is dropped).
Thumbnail blocks get no newline, as the stock base image. Separators are recorded in
``separator_positions`` and never in ``vision_positions``.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from lrsvqa.errors import ConfigError, ModelError
from lrsvqa.models.base import (
    Adapter,
    AttentionReadout,
    Capabilities,
    Generation,
    InputFormat,
    PreparedInputs,
    VisionSegment,
    VisionTokens,
)
from lrsvqa.models.generation import forced_greedy, settings_record
from lrsvqa.models.hooks import read_attention, run_until
from lrsvqa.models.layout import TEXT_POSITION, ImageBlock, LayoutEntry, Placed, Slot
from lrsvqa.models.prefix_cache import FocusPrefix, cache_kwarg
from lrsvqa.models.release_format import (
    release_prompt,
    release_token_ids,
    separator_token_id,
)

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

FOCUS_PREFIXES = 6  # vision prefixes kept for focus passes: one per level of a scene


class HFAdapter(Adapter):
    """An adapter over a stock ``*ForConditionalGeneration`` model and its processor."""

    model_class_name: ClassVar[str]
    processor_class: ClassVar[type[Any]]
    reference_model_id: ClassVar[str]

    # True: all blocks share the prompt's one image placeholder (LLaVA: base + anyres grid
    # of one image); False: one placeholder per block (Qwen: one vision_start..end each).
    def __init__(self, model: Any, processor: Any, *, model_id: str, revision: str | None):
        super().__init__(model, processor, model_id=model_id, revision=revision)
        self._caps: Capabilities | None = None
        # Vision prefixes of recent focus passes (one per pyramid level of the current scene).
        self._focus_prefixes: list[FocusPrefix] = []
        self.prefix_hits = 0

    def use_input_format(self, fmt: InputFormat) -> None:
        if fmt.global_separator:
            separator_token_id(self.tokenizer)  # a tokenizer without ':' fails now
        super().use_input_format(fmt)
        self._caps = None
        self._focus_prefixes.clear()

    # ----------------------------------------------------------------- description
    @classmethod
    @abstractmethod
    def capabilities_for(cls, config: Any) -> Capabilities:
        """The family's capabilities for a model config."""

    @classmethod
    @abstractmethod
    def reference_config(cls) -> Any:
        """The config of ``reference_model_id``, built locally (no download)."""

    @property
    def capabilities(self) -> Capabilities:
        if self._caps is None:
            caps = self.capabilities_for(self.model.config)
            if self.input_format.newline_rows and not caps.newline_tokens:
                caps = replace(caps, newline_tokens=True)
            self._caps = caps
        return self._caps

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def image_token_id(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "image_token_id", None) or cfg.image_token_index)

    def language_model(self) -> Any:
        return self.model.model.language_model

    # ---------------------------------------------------------------------- encode
    def check_image(self, image: Any) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", type(image).__name__)
            raise ConfigError(f"an image must be a (height, width, 3) uint8 array, got {shape}")
        if image.dtype != np.uint8:
            raise ConfigError(f"an image must be uint8 (stretch it first), got {image.dtype}")
        side = self.capabilities.patch_size
        if min(image.shape[:2]) < side:
            raise ConfigError(
                f"image of {image.shape[1]}x{image.shape[0]} px is smaller than one "
                f"{side} px patch of {self.family}; pass images at least {side} px a side"
            )
        return image

    def encode(self, images: Sequence[np.ndarray]) -> list[VisionTokens]:
        # No cache here: encoded tiles are cached once, per scene, by the pipeline's session.
        checked = [self.check_image(im) for im in images]
        if not checked:
            return []
        with torch.no_grad():
            return self.encode_images(checked)

    @abstractmethod
    def encode_images(self, images: list[np.ndarray]) -> list[VisionTokens]:
        """Encode without the cache (batched); images are already checked."""

    @staticmethod
    def to_pil(image: np.ndarray) -> Image.Image:
        from PIL import Image

        return Image.fromarray(np.ascontiguousarray(image))

    # ------------------------------------------------------------------ stock path
    def messages(self, n_images: int, question: str, system: str | None) -> list[dict[str, Any]]:
        msgs: list[dict[str, Any]] = []
        if system is not None:
            msgs.append({"role": "system", "content": [{"type": "text", "text": system}]})
        content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
        content.append({"type": "text", "text": question})
        msgs.append({"role": "user", "content": content})
        return msgs

    def prompt(self, n_images: int, question: str, system: str | None = None) -> str:
        fmt = self.input_format.prompt_format
        if fmt is not None:
            if n_images != 1:
                raise ModelError(f"the release's {fmt} prompt holds one image, not {n_images}")
            return release_prompt(fmt, question, system)
        text = self.processor.apply_chat_template(
            self.messages(n_images, question, system), add_generation_prompt=True, tokenize=False
        )
        return text if isinstance(text, str) else text[0]

    def stock_inputs(self, image: np.ndarray, question: str, system: str | None = None) -> Any:
        """What the stock processor gives for one image and a question (on the model's device)."""
        text = self.prompt(1, question, system)
        batch = self.processor(
            images=[self.to_pil(self.check_image(image))], text=[text], return_tensors="pt"
        )
        return batch.to(self.device)

    def stock_segments(self, image: np.ndarray) -> list[VisionSegment]:
        """Segments that, fully kept, reproduce the stock processor's input for ``image``."""
        return [VisionSegment(tokens=self.encode([image])[0], kind="tile")]

    # ---------------------------------------------------------------- build_inputs
    def _blocks(self, segments: Sequence[VisionSegment]) -> list[list[int]]:
        blocks: list[list[int]] = []
        for i, seg in enumerate(segments):
            if blocks and segments[blocks[-1][-1]].group == seg.group:
                blocks[-1].append(i)
            else:
                blocks.append([i])
        return blocks

    def _layout(self, segments: Sequence[VisionSegment], members: list[int]) -> ImageBlock:
        rows = cols = 0
        cells: list[tuple[int, int, int, int]] = []  # (row, col, segment, raster index)
        for s in members:
            seg = segments[s]
            g_rows, g_cols = seg.tokens.grid
            if seg.tokens.embeds.shape[0] != g_rows * g_cols:
                raise ConfigError(
                    f"segment {s}: {seg.tokens.embeds.shape[0]} embeddings for grid {seg.tokens.grid}"
                )
            r0, c0 = seg.offset
            rows, cols = max(rows, r0 + g_rows), max(cols, c0 + g_cols)
            idx: list[int]
            if seg.keep is None:
                idx = list(range(g_rows * g_cols))
            else:
                keep = seg.keep.detach().to("cpu", torch.long).reshape(-1)
                if keep.numel() and (int(keep.min()) < 0 or int(keep.max()) >= g_rows * g_cols):
                    raise ConfigError(
                        f"segment {s}: keep index out of range 0..{g_rows * g_cols - 1}"
                    )
                idx = sorted(set(keep.tolist()))
            for i in idx:
                r, c = divmod(i, g_cols)
                cells.append((r0 + r, c0 + c, s, i))
        cells.sort(key=lambda t: (t[0], t[1]))  # stable: ties keep segment order
        newline = self.capabilities.newline_tokens and segments[members[0]].kind == "tile"
        frames = [f for s in members if (f := segments[s].frame_rows) is not None]
        every_row = max(frames) if newline and frames else 0
        entries: list[LayoutEntry] = []
        last_row = -1
        for n, (r, c, s, i) in enumerate(cells):
            for empty in range(last_row + 1, min(r, every_row)):  # rows with no kept token
                entries.append(LayoutEntry(Slot.SEPARATOR, empty, -1))
            last_row = max(last_row, r)
            entries.append(LayoutEntry(Slot.VISION, r, c, segment=s, index=i))
            if newline and (n + 1 == len(cells) or cells[n + 1][0] != r):
                entries.append(LayoutEntry(Slot.SEPARATOR, r, c))
        for empty in range(last_row + 1, every_row):
            entries.append(LayoutEntry(Slot.SEPARATOR, empty, -1))
        return ImageBlock(entries, (rows, cols))

    def llm_vision_positions(self, segments: Sequence[VisionSegment]) -> int:
        """Sequence positions ``segments`` take in the LLM input, separators included."""
        return sum(len(self._layout(segments, b).entries) for b in self._blocks(segments))

    def prompt_text_tokens(self, question: str, n_images: int) -> int:
        """Text tokens of the prompt around ``n_images`` image placeholders (placeholders
        excluded): what the chat template adds besides the vision positions."""
        ids = self.prompt_ids(n_images, question)
        extra = 1 if self.input_format.global_separator else 0
        return extra + sum(1 for t in ids if t != self.image_token_id)

    def prompt_ids(self, n_images: int, question: str, system: str | None = None) -> list[int]:
        """Token ids of the prompt, one image id per placeholder (the release preset
        tokenizes around ``<image>`` as its ``tokenizer_image_token``)."""
        text = self.prompt(n_images, question, system)
        if self.input_format.prompt_format is not None:
            return release_token_ids(self.tokenizer, text, self.image_token_id)
        return list(self.tokenizer(text)["input_ids"])

    def build_inputs(
        self,
        segments: Sequence[VisionSegment],
        question: str,
        *,
        system: str | None = None,
    ) -> PreparedInputs:
        blocks = self._blocks(segments)
        layouts = [self._layout(segments, b) for b in blocks]
        # Which blocks fill each image placeholder of the prompt.
        if self.single_placeholder:
            per_hole = [list(range(len(blocks)))] if blocks else []
        else:
            per_hole = [[b] for b in range(len(blocks))]
        ids = self.prompt_ids(len(per_hole), question, system)
        image_id = self.image_token_id
        holes = [i for i, t in enumerate(ids) if t == image_id]
        if len(holes) != len(per_hole):
            raise ModelError(
                f"{self.family}: the chat template gave {len(holes)} image placeholders for "
                f"{len(per_hole)} images; check the processor's chat template"
            )
        seq: list[int] = []
        placed: list[Placed] = []
        prev = 0
        for hole, members in zip(holes, per_hole, strict=True):
            seq.extend(ids[prev:hole])
            placed.extend([TEXT_POSITION] * (hole - prev))
            for n, b in enumerate(members):
                if (
                    n
                    and self.input_format.global_separator
                    and segments[blocks[members[n - 1]][0]].kind == "thumbnail"
                ):  # the release's ':' between global and local tokens
                    seq.append(separator_token_id(self.tokenizer))
                    placed.append(TEXT_POSITION)
                for e in layouts[b].entries:
                    seq.append(image_id)
                    placed.append(Placed(e.kind, b, e))
            prev = hole + 1
        placed.extend([TEXT_POSITION] * (len(ids) - prev))
        seq.extend(ids[prev:])

        device = self.device
        input_ids = torch.tensor([seq], dtype=torch.long, device=device)
        kinds_t = torch.tensor([int(p.kind) for p in placed])
        vision_pos = torch.nonzero(kinds_t == Slot.VISION).flatten()
        sep_pos = torch.nonzero(kinds_t == Slot.SEPARATOR).flatten()
        vision_entries = [placed[p].entry for p in vision_pos.tolist()]
        seg_idx = [
            int(e.segment) for e in vision_entries if e is not None and e.segment is not None
        ]
        tok_idx = [int(e.index) for e in vision_entries if e is not None and e.index is not None]
        with torch.no_grad():
            embeds = self.model.get_input_embeddings()(input_ids).clone()
            if seg_idx:
                rows = self._gather(segments, seg_idx, tok_idx, embeds)
                embeds[0, vision_pos.to(device)] = rows
            if len(sep_pos):
                embeds[0, sep_pos.to(device)] = self.separator_embedding().to(device, embeds.dtype)
        position_ids = self.position_ids(placed, layouts)
        sep_entries = [placed[p] for p in sep_pos.tolist()]
        sep_groups = [
            segments[blocks[p.block][0]].group if p.block is not None else -1 for p in sep_entries
        ]
        sep_rows = [p.entry.row if p.entry is not None else -1 for p in sep_entries]
        return PreparedInputs(
            inputs_embeds=embeds,
            attention_mask=torch.ones_like(input_ids),
            position_ids=position_ids.to(device),
            input_ids=input_ids,
            vision_positions=vision_pos,
            vision_segment=torch.tensor(seg_idx, dtype=torch.long),
            vision_index=torch.tensor(tok_idx, dtype=torch.long),
            separator_positions=sep_pos,
            separator_groups=torch.tensor(sep_groups, dtype=torch.long),
            separator_rows=torch.tensor(sep_rows, dtype=torch.long),
        )

    @staticmethod
    def _gather(
        segments: Sequence[VisionSegment],
        seg_idx: list[int],
        tok_idx: list[int],
        like: torch.Tensor,
    ) -> torch.Tensor:
        seg_t = torch.tensor(seg_idx)
        tok_t = torch.tensor(tok_idx)
        out = torch.empty(len(seg_idx), like.shape[-1], dtype=like.dtype, device=like.device)
        for s in sorted(set(seg_idx)):
            sel = torch.nonzero(seg_t == s).flatten()
            src = segments[s].tokens.embeds.to(like.device, like.dtype)
            out[sel.to(like.device)] = src[tok_t[sel].to(like.device)]
        return out

    def separator_embedding(self) -> torch.Tensor:
        raise ModelError(f"{self.family} has no newline embedding")

    def position_ids(self, placed: Sequence[Placed], blocks: Sequence[ImageBlock]) -> torch.Tensor:
        """1-D positions 0..L-1 (families without M-RoPE)."""
        return torch.arange(len(placed)).unsqueeze(0)

    def generation_position_ids(self, inputs: PreparedInputs) -> torch.Tensor:
        """Position ids in the form the stock ``generate`` passes to the first forward."""
        return inputs.position_ids

    # ------------------------------------------------------------------- attention
    def attention(self, inputs: PreparedInputs, layers: Sequence[int]) -> torch.Tensor:
        return self.attention_readout(inputs, layers).weights

    def attention_readout(self, inputs: PreparedInputs, layers: Sequence[int]) -> AttentionReadout:
        lm = self.language_model()
        n_layers = len(lm.layers)
        if not layers:
            raise ConfigError("attention needs at least one layer index")
        bad = [i for i in layers if not 0 <= i < n_layers]
        if bad:
            raise ConfigError(
                f"layer {bad[0]} is out of range: {self.family} has {n_layers} layers"
            )

        positions = self.generation_position_ids(inputs)
        hits = self.prefix_hits
        prefix = self._prefix_for(inputs, positions, max(layers))
        reused = prefix.length if prefix is not None and self.prefix_hits > hits else 0
        if prefix is None:

            def run() -> Any:
                return lm(
                    inputs_embeds=inputs.inputs_embeds,
                    attention_mask=inputs.attention_mask,
                    position_ids=positions,
                    use_cache=False,
                )

            full = read_attention(lm.layers, layers, run)
        else:
            # The vision prefix is the same for every question about the same tiles: only
            # the question's tokens run, against the cached keys and values of the prefix.
            p, cache = prefix.length, prefix.cache

            def run_suffix() -> Any:
                return lm(
                    inputs_embeds=inputs.inputs_embeds[:, p:],
                    attention_mask=inputs.attention_mask,
                    position_ids=positions[..., p:],
                    use_cache=True,
                    **cache_kwarg(lm, cache),
                )

            try:
                full = read_attention(
                    lm.layers, layers, run_suffix, prefix_keys=lambda i: cache.layers[i].keys
                )
            finally:
                prefix.trim()
        weights = full[:, :, inputs.vision_positions.to(full.device)]
        separators = full[:, :, inputs.separator_positions.to(full.device)]
        return AttentionReadout(
            weights,
            tokens_run=inputs.length - reused,
            keys=inputs.length,
            separator_weights=separators,
        )

    def _prefix_for(
        self, inputs: PreparedInputs, positions: torch.Tensor, deepest: int
    ) -> FocusPrefix | None:
        """The cached vision prefix of ``inputs`` (filled now if new); None: no split."""
        marks = torch.cat([inputs.vision_positions, inputs.separator_positions])
        if marks.numel() == 0:
            return None
        p = int(marks.max()) + 1
        if p >= inputs.length:
            return None
        for i, cached in enumerate(self._focus_prefixes):
            if cached.matches(inputs.inputs_embeds, positions, deepest):
                self.prefix_hits += 1
                self._focus_prefixes.append(self._focus_prefixes.pop(i))  # most recent last
                return cached
        from transformers import DynamicCache

        lm = self.language_model()
        cache = DynamicCache(config=lm.config)

        def run_prefix() -> Any:
            return lm(
                inputs_embeds=inputs.inputs_embeds[:, :p],
                attention_mask=inputs.attention_mask[:, :p],
                position_ids=positions[..., :p],
                use_cache=True,
                **cache_kwarg(lm, cache),
            )

        run_until(lm.layers, deepest, run_prefix)
        prefix = FocusPrefix(
            inputs.inputs_embeds[:, :p].clone(), positions[..., :p].clone(), cache, deepest
        )
        self._focus_prefixes = [*self._focus_prefixes[-(FOCUS_PREFIXES - 1) :], prefix]
        return prefix

    def clear_focus_cache(self) -> None:
        """Forget the cached vision prefixes (e.g. to time a cold focus pass)."""
        self._focus_prefixes.clear()

    # -------------------------------------------------------------------- generate
    def generation_settings(self, max_new_tokens: int) -> dict[str, Any]:
        """What decides the generated tokens, for a run's saved config."""
        return settings_record(forced_greedy(self.model.generation_config, max_new_tokens))

    def generate(
        self,
        inputs: PreparedInputs,
        *,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        output_scores: bool = False,
    ) -> Generation:
        config = forced_greedy(self.model.generation_config, max_new_tokens, do_sample=do_sample)
        config.return_dict_in_generate, config.output_logits = True, output_scores
        extra = {"tokenizer": self.tokenizer} if config.stop_strings else {}
        with torch.no_grad():
            # The prompt's ids beside its embeddings: the first forward reads the embeddings,
            # and every processor that reads the prompt sees the ids stock generate sees.
            out = self.model.generate(
                input_ids=inputs.input_ids,
                inputs_embeds=inputs.inputs_embeds,
                attention_mask=inputs.attention_mask,
                position_ids=self.generation_position_ids(inputs),
                generation_config=config,
                **extra,
            )
        new = out.sequences[0, inputs.length :].tolist()
        scores = [s[0] for s in out.logits] if output_scores and out.logits is not None else None
        return Generation(
            text=self.tokenizer.decode(new, skip_special_tokens=True),
            token_ids=new,
            scores=scores,
            prompt_tokens=inputs.length,
        )
