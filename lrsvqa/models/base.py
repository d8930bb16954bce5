"""The adapter interface: one object per loaded LVLM that the pipeline talks to.

The pipeline never branches on a model's class. It asks an adapter to
1. ``encode`` images (tiles, thumbnail) into LLM-space vision tokens,
2. ``build_inputs`` from any subset of those tokens plus a question,
   each kept token keeping its true 2-D position,
3. read the last prompt token's ``attention`` over the vision tokens, and
4. ``generate`` an answer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass(frozen=True)
class Capabilities:
    """What a model family can do and the shapes the pipeline must plan for."""

    family: str
    tile_size: int  # pixel side of one pyramid tile fed to the vision tower
    patch_size: int  # pixel side covered by one LLM vision token (Qwen: 28, CLIP-336/14: 14)
    tokens_per_tile: tuple[int, int]  # (rows, cols) of LLM vision tokens for one tile
    thumbnail_size: int  # pixel side of the global thumbnail
    mrope: bool  # True: 3-D M-RoPE position ids (Qwen); False: 1-D positions
    newline_tokens: bool  # rows of vision tokens end with a separator embedding
    context_length: int  # the LLM's maximum sequence length
    hidden_size: int = 0
    num_layers: int = 0
    num_heads: int = 0
    num_kv_heads: int = 0
    intermediate_size: int = 0
    vision_flops_per_tile: float = 0.0  # analytic FLOPs of the vision tower for one tile
    # Decoder layers the focus reads by default, when the model folder declares them
    # (config.json ``"lrsvqa": {"focus_layers": [...]}``); None: the depth rule.
    focus_layers: tuple[int, ...] | None = None

    @property
    def n_tokens_per_tile(self) -> int:
        return self.tokens_per_tile[0] * self.tokens_per_tile[1]

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def model_declared(config: Any) -> dict[str, Any]:
    """What a model folder declares for lrsvqa: config.json's ``"lrsvqa"`` dict (or {})."""
    raw = getattr(config, "lrsvqa", None)
    return dict(raw) if isinstance(raw, dict) else {}


def declared_focus_layers(declared: dict[str, Any]) -> tuple[int, ...] | None:
    layers = declared.get("focus_layers")
    return tuple(int(x) for x in layers) if layers else None


@dataclass(frozen=True)
class VisionTokens:
    """The encoding of one image: LLM-space embeddings in raster order."""

    embeds: torch.Tensor  # (rows * cols, hidden), on the model's device and dtype
    grid: tuple[int, int]  # (rows, cols)

    @property
    def n(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass(frozen=True)
class VisionSegment:
    """Part of one encoded image that goes into the LLM input.

    ``keep`` holds the raster indices (into ``tokens``) that are kept, sorted;
    ``None`` keeps all. ``offset`` is the (row, col) of this image's token grid inside
    the whole-scene token grid of its ``group``: segments of one group (e.g. the tiles
    of one pyramid level) share one coordinate frame, so M-RoPE ids never collide and
    relations across tiles stay visible. The thumbnail is its own group.
    """

    tokens: VisionTokens
    keep: torch.Tensor | None = None
    offset: tuple[int, int] = (0, 0)
    group: int = 0
    kind: Literal["thumbnail", "tile"] = "tile"
    # rows of the group's frame that each end with a newline even when none of their tokens
    # is kept (the release keeps one newline per row of a level's grid); None: only rows
    # holding a kept token get one (stock unpadding)
    frame_rows: int | None = None


@dataclass
class PreparedInputs:
    """A ready LLM input and the map from sequence positions back to vision tokens."""

    inputs_embeds: torch.Tensor  # (1, L, hidden)
    attention_mask: torch.Tensor  # (1, L)
    position_ids: torch.Tensor  # (3, 1, L) for M-RoPE, else (1, L)
    input_ids: torch.Tensor  # (1, L); vision positions hold the image placeholder id
    vision_positions: torch.Tensor  # (n_vision,) sequence index of each ranked vision token
    vision_segment: torch.Tensor  # (n_vision,) index into the segments given to build_inputs
    vision_index: torch.Tensor  # (n_vision,) raster index of the token inside its image
    separator_positions: torch.Tensor  # sequence indices of newline / separator tokens
    # (n_separators,) the segment group and the group-grid row each newline ends (None:
    # the adapter does not say; focus passes then cannot put newlines in the softmax)
    separator_groups: torch.Tensor | None = None
    separator_rows: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return int(self.inputs_embeds.shape[1])


@dataclass(frozen=True)
class AttentionReadout:
    """One attention pass: the weights, and what the pass actually ran (for the cost report)."""

    weights: torch.Tensor  # (layers, heads, n_vision) softmax attention of the last token
    tokens_run: int  # positions the decoder layers ran (fewer when a KV-cached prefix is reused)
    keys: int  # positions each of them attended to
    # (layers, heads, n_separators) the same softmax at the newline positions, when known
    separator_weights: torch.Tensor | None = None


@dataclass
class Generation:
    """Greedy (or sampled) output of ``Adapter.generate``."""

    text: str
    token_ids: list[int]
    scores: list[torch.Tensor] | None = None  # per generated step, (vocab,) logits
    prompt_tokens: int = 0


@dataclass(frozen=True)
class InputFormat:
    """How an adapter lays out its LLM input under the release preset."""

    prompt_format: str | None = None  # vicuna_v1 | qwen_1_5; None: the model's chat template
    global_separator: bool = False  # the ':' token between the thumbnail and the tiles
    newline_rows: bool = False  # tile blocks end every row with a newline (LLaVA-1.5 too)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_format": self.prompt_format,
            "global_separator": ":" if self.global_separator else None,
            "newline_rows": self.newline_rows,
        }


class Adapter(ABC):
    """One loaded LVLM behind the operations the pipeline needs."""

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]  # transformers ``model_type`` values it serves

    #: LLaVA-1.5's layout: one image placeholder for the thumbnail and every tile.
    single_placeholder: ClassVar[bool] = False

    def __init__(self, model: Any, processor: Any, *, model_id: str, revision: str | None):
        self.model = model
        self.processor = processor
        self.model_id = model_id
        self.revision = revision
        self.input_format = InputFormat()  # the model's own (stock) input format

    def use_input_format(self, fmt: InputFormat) -> None:
        """Lay out LLM inputs as ``fmt`` says (the release preset: its prompts, the ``:``
        separator, a newline per tile row); ``InputFormat()`` is the stock format."""
        self.input_format = fmt

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @abstractmethod
    def encode(self, images: Sequence[np.ndarray]) -> list[VisionTokens]:
        """Encode uint8 (H, W, 3) images into vision tokens (batched, no grad)."""

    @abstractmethod
    def build_inputs(
        self,
        segments: Sequence[VisionSegment],
        question: str,
        *,
        system: str | None = None,
    ) -> PreparedInputs:
        """The LLM input: [system][segments in the given order][question]."""

    @abstractmethod
    def attention(self, inputs: PreparedInputs, layers: Sequence[int]) -> torch.Tensor:
        """Softmax attention of the last prompt token over the vision tokens.

        Returns (len(layers), heads, n_vision), recomputed from q/k in forward hooks
        (works under SDPA); stops the forward pass after the deepest requested layer.
        """

    def generation_position_ids(self, inputs: PreparedInputs) -> torch.Tensor:
        """Position ids in the form the model's ``generate`` passes to its first forward."""
        return inputs.position_ids

    def language_model(self) -> Any:
        """The stock decoder (its ``layers``) for in-LLM pruning and distilled RFMs."""
        from lrsvqa.errors import ModelError

        raise ModelError(
            f"{type(self).__name__} does not expose its decoder layers (language_model()); "
            "in-LLM pruning and distilled RFMs need a transformers-backed adapter"
        )

    def attention_readout(self, inputs: PreparedInputs, layers: Sequence[int]) -> AttentionReadout:
        """``attention`` plus how many tokens the pass ran and attended to (default: all)."""
        return AttentionReadout(self.attention(inputs, layers), inputs.length, inputs.length)

    def llm_vision_positions(self, segments: Sequence[VisionSegment]) -> int:
        """Sequence positions ``segments`` take in the LLM input (separators included)."""
        return sum(seg.tokens.n if seg.keep is None else int(seg.keep.numel()) for seg in segments)

    def prompt_text_tokens(self, question: str, n_images: int) -> int:
        """Text tokens of the prompt around ``n_images`` image placeholders."""
        return 0

    def generation_settings(self, max_new_tokens: int) -> dict[str, Any]:
        """What decides the generated tokens, saved with every result."""
        return {"max_new_tokens": max_new_tokens, "do_sample": False, "greedy_forced": True}

    @abstractmethod
    def generate(
        self,
        inputs: PreparedInputs,
        *,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        output_scores: bool = False,
    ) -> Generation:
        """Generate an answer from prepared inputs (greedy by default)."""
