"""Token scorers: how much the question attends to each vision token of the candidates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

    from lrsvqa.models.base import Adapter, PreparedInputs, VisionSegment


@dataclass(frozen=True)
class ScoreResult:
    """What one scoring pass gave and what it ran (the cost report is built from these)."""

    grids: list[np.ndarray]  # one (rows, cols) array per candidate segment; all sum to 1
    sequence_length: int  # tokens of the pass's prompt
    tokens_run: int  # of those, tokens the decoder layers actually ran (a cached prefix is not)
    keys: int  # positions each of them attended to
    # newlines inside the softmax (``FocusConfig.newlines="in-softmax"``): the score of the
    # newline ending each (group, row) of the candidates; the grids and these sum to 1
    separators: dict[tuple[int, int], float] | None = None


class TokenScorer(Protocol):
    """Scores the tokens of ``segments[1:]`` (segment 0 is the thumbnail context)."""

    name: str

    def resolve_layers(self, adapter: Adapter) -> tuple[int, ...]:
        """The decoder layers read; a pass runs layers ``0..max``. ConfigError if out of range."""
        ...

    def score(
        self, adapter: Adapter, segments: Sequence[VisionSegment], question: str
    ) -> ScoreResult:
        """Scores of the candidate tokens, and what the pass ran."""
        ...

    def describe(self) -> dict[str, Any] | None:
        """Where the scorer's weights come from (a distilled RFM's metadata), else None."""
        ...


class AttentionScorer:
    """The training-free Region Focus Module: the LVLM's own attention at chosen layers.

    The last prompt token's attention over the candidate tiles' vision tokens is
    renormalised per head (softmax restricted to those tokens), then averaged over
    heads and layers. Newline/separator tokens never enter the ranking.
    """

    name = "attention"

    def __init__(self, layers: Sequence[int] | None = None, *, newlines: bool = False):
        self.layers = tuple(layers) if layers is not None else None
        self.newlines = newlines  # newline tokens inside the softmax, as the release

    def resolve_layers(self, adapter: Adapter) -> tuple[int, ...]:
        from lrsvqa.errors import ConfigError

        caps = adapter.capabilities
        depth = caps.num_layers
        layers = self.layers or caps.focus_layers or (default_focus_layer(depth),)
        bad = [layer for layer in layers if layer >= depth]
        if bad:
            raise ConfigError(
                f"focus layer(s) {bad} beyond the model's {depth} layers; use 0..{depth - 1}"
            )
        return layers

    def score(
        self, adapter: Adapter, segments: Sequence[VisionSegment], question: str
    ) -> ScoreResult:
        layers = self.resolve_layers(adapter)
        inputs = adapter.build_inputs(segments, question)
        readout = adapter.attention_readout(inputs, layers)  # weights: (layers, heads, n_vision)
        attention = readout.weights
        candidate = (inputs.vision_segment >= 1).to(attention.device)
        seps = newline_candidates(inputs) if self.newlines else None
        if seps is not None and readout.separator_weights is not None:
            import torch  # here, not at import: `import lrsvqa.pipeline` stays light

            attention = torch.cat([attention, readout.separator_weights.to(attention.device)], -1)
            candidate = torch.cat([candidate, seps.to(attention.device)])
        scores = candidate_distribution(attention, candidate).double().cpu().numpy()
        return split_scores(scores, inputs, segments, seps, readout.tokens_run, readout.keys)

    def describe(self) -> dict[str, Any] | None:
        return None


def newline_candidates(inputs: PreparedInputs) -> torch.Tensor | None:
    """(n_separators,) mask of the newlines that end rows of candidate tiles, or None when
    the input has none (or the adapter does not say which rows they end)."""
    if inputs.separator_groups is None or inputs.separator_positions.numel() == 0:
        return None
    return inputs.separator_groups.cpu() >= 1


def split_scores(
    scores: np.ndarray,
    inputs: PreparedInputs,
    segments: Sequence[VisionSegment],
    seps: torch.Tensor | None,
    tokens_run: int,
    keys: int,
) -> ScoreResult:
    """Scores over the candidates (vision tokens, then any newlines) → a ``ScoreResult``."""
    n_vision = int((inputs.vision_segment >= 1).sum())
    grids = scores_to_grids(scores[:n_vision], inputs, segments)
    separators = None
    if seps is not None:
        assert inputs.separator_groups is not None and inputs.separator_rows is not None
        groups = inputs.separator_groups.cpu()[seps].tolist()
        rows = inputs.separator_rows.cpu()[seps].tolist()
        separators = {
            (int(g), int(r)): float(v)
            for g, r, v in zip(groups, rows, scores[n_vision:], strict=True)
        }
    return ScoreResult(grids, inputs.length, tokens_run, keys, separators)


def candidate_distribution(attention: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """(layers, heads, L) attention → (n_candidates,): restrict, renormalise per head, mean.

    The same definition as ``AttentionScorer``: softmax over all keys, then restricted to
    the candidate vision tokens and renormalised per head and layer, then averaged.
    """
    att = attention[..., candidates].float()
    att = att / att.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    return att.mean(dim=(0, 1))


def scores_to_grids(
    scores: np.ndarray, inputs: PreparedInputs, segments: Sequence[VisionSegment]
) -> list[np.ndarray]:
    """Candidate scores (in sequence order) → one (rows, cols) array per ``segments[1:]``."""
    candidate = (inputs.vision_segment >= 1).cpu()
    seg_of = inputs.vision_segment.cpu()[candidate].numpy()
    idx_of = inputs.vision_index.cpu()[candidate].numpy()
    out = []
    for s, segment in enumerate(segments[1:], start=1):
        grid = np.zeros(segment.tokens.n, dtype=np.float64)
        mask = seg_of == s
        grid[idx_of[mask]] = scores[mask]
        out.append(grid.reshape(segment.tokens.grid))
    return out


def default_focus_layer(num_layers: int) -> int:
    """Index of the layer read by default: the last of the first quarter of the layers
    (DESIGN §3: run the first k layers, read layer k), so focusing costs a quarter of a
    forward pass: layer 6 of Qwen2-VL-7B's 28, layer 7 of a 32-layer LLaVA, 2 of 12; never
    layer 0 (it has seen no context yet) unless the LLM has one layer: 1 of 4 or 8."""
    if num_layers <= 1:
        return 0
    return max(1, num_layers // 4 - 1)
