"""PyramidDrop: drop image tokens in stages inside the LLM (Chen et al., 2024).

The LLM's layers are split into stages at boundary layers (default L/4, L/2, 3L/4). Before
each boundary layer, the image tokens still present are ranked by the attention of the last
instruction token to them, computed with that layer's own q/k projections (after its input
norm, with its rotary embedding, M-RoPE included, and any q/k norm; softmax over all keys,
mean over heads), and only the top ``keep_ratio`` of them go on.

Rows are dropped physically during prefill by forward pre-hooks (with kwargs) on the decoder
layers of the stock model: the hook slices the layer's hidden states and everything the
model's loop hands every layer at full length (rotary cos/sin, position ids, a 4-D mask if
there is one). So each layer's KV cache holds that layer's kept set only, and decoding
attends, per layer, to its own cache; the new token's positions come from ``generate``'s
usual bookkeeping, exactly as in stock generation. Layer 0 never drops, so the cache length
that ``generate`` and the mask builders read (layer 0's) is the full prompt's.

Separator (newline) tokens of LLaVA-NeXT / OneVision are never ranked and never dropped:
they mark the rows of the 2-D layout, are about one per row of tokens, and ranking them
biases the ranking (DESIGN §3). The text is never dropped either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lrsvqa.errors import ModelError
from lrsvqa.models.attention import last_token_attention

if TYPE_CHECKING:
    from lrsvqa.models.base import PreparedInputs

# score(layer, hidden, kwargs) -> (rows,) float scores of the rows present at that layer
Scorer = Callable[[torch.nn.Module, torch.Tensor, dict[str, Any]], torch.Tensor]

SUPPORTED_ATTENTION = ("sdpa", "eager")


@dataclass(frozen=True)
class Stage:
    """One drop: rank at ``score_layer``'s input, keep a share of the image rows from
    ``drop_layer`` on (``score_layer <= drop_layer``, no other drop in between)."""

    score_layer: int
    drop_layer: int
    keep_ratio: float
    score: Scorer
    # (original image tokens N, tokens present n) -> tokens kept; None: keep_count(n, ratio)
    count: Callable[[int, int], int] | None = None

    def kept(self, original: int, present: int) -> int:
        """Image tokens this stage keeps of ``present``, ``original`` before any stage."""
        if self.count is not None:
            return self.count(original, present)
        return keep_count(present, self.keep_ratio)


def keep_count(n: int, ratio: float) -> int:
    """How many of ``n`` image tokens a stage keeps: ``n * ratio`` rounded half up."""
    return min(n, math.floor(n * ratio + 0.5))


def original_count(ratio: float, stage: int) -> Callable[[int, int], int]:
    """The release's count at stage ``stage`` (1-based): ``int(N * ratio**stage)`` of the
    original N image tokens (PyramidDrop's ``modeling_llama_pdrop.py`` computes each stage's
    length from the first), never more than are present."""

    def count(original: int, present: int) -> int:
        return min(present, int(original * ratio**stage))

    return count


def pdrop_stages(
    boundaries: Sequence[int], keep_ratio: float, *, original: bool = False
) -> list[Stage]:
    """PyramidDrop: at each boundary, rank with that layer's own attention, then drop;
    ``original``: stage s keeps ``int(N * keep_ratio**s)`` (the release) instead of
    ``keep_ratio`` of the tokens still present."""
    return [
        Stage(
            b,
            b,
            keep_ratio,
            last_token_attention,
            original_count(keep_ratio, s + 1) if original else None,
        )
        for s, b in enumerate(boundaries)
    ]


def _slice_kwargs(kwargs: dict[str, Any], rows: torch.Tensor, length: int) -> dict[str, Any]:
    """Keep ``rows`` of every per-position tensor a decoder layer gets at full ``length``."""
    out = dict(kwargs)
    emb = kwargs.get("position_embeddings")
    if emb is not None:
        out["position_embeddings"] = tuple(
            t.index_select(-2, rows) if t.shape[-2] == length else t for t in emb
        )
    pos = kwargs.get("position_ids")
    if isinstance(pos, torch.Tensor) and pos.shape[-1] == length:
        out["position_ids"] = pos.index_select(-1, rows)
    mask = kwargs.get("attention_mask")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.ndim != 4:
            raise ModelError(
                f"cannot drop rows under a {type(mask).__name__} attention mask; load the "
                f"model with attn_implementation one of {', '.join(SUPPORTED_ATTENTION)}"
            )
        out["attention_mask"] = mask.index_select(-2, rows).index_select(-1, rows)
    return out


class RowDropper:
    """Forward pre-hooks that drop image rows in prefill and keep masks right in decoding.

    Use ``with dropper.installed(): adapter.generate(inputs, ...)``. The first call of the
    language model inside the block is the prefill; later calls are decoding steps.
    """

    def __init__(
        self,
        language_model: Any,
        stages: Sequence[Stage],
        inputs: PreparedInputs,
        *,
        compact: bool = False,
    ) -> None:
        self.lm = language_model
        self.layers = list(language_model.layers)
        impl = getattr(language_model.config, "_attn_implementation", "sdpa")
        if impl not in SUPPORTED_ATTENTION:
            raise ModelError(
                f"in-LLM token dropping supports attn_implementation "
                f"{' or '.join(SUPPORTED_ATTENTION)}, not {impl!r}; reload the model with one"
            )
        self.stages = list(stages)
        for s in self.stages:
            # Layer 0 keeps every row: generate and the mask builders read its cache length.
            if not 0 <= s.score_layer <= s.drop_layer or not 1 <= s.drop_layer < len(self.layers):
                raise ModelError(
                    f"a drop before layer {s.drop_layer} (ranked at {s.score_layer}) is outside "
                    f"layers 1..{len(self.layers) - 1}"
                )
        self.length = inputs.length
        device = inputs.inputs_embeds.device
        self.droppable = torch.zeros(self.length, dtype=torch.bool, device=device)
        self.droppable[inputs.vision_positions.to(device)] = True
        self.n_image = int(self.droppable.sum())  # N: the image tokens before any drop
        self.all_rows = torch.arange(self.length, device=device)
        self.keep = self.all_rows
        self.layer_keep: list[torch.Tensor | None] = [None] * len(self.layers)
        self.tokens_per_layer: list[int] = [self.length] * len(self.layers)
        self.calls = 0
        self._scores: dict[int, torch.Tensor] = {}
        # compact: after a drop the rows present are renumbered 0..n-1 (1-D RoPE only)
        self.compact = compact
        self._compact_kwargs: dict[str, Any] | None = None

    @contextmanager
    def installed(self) -> Iterator[RowDropper]:
        handles = [self.lm.register_forward_pre_hook(self._on_model, with_kwargs=True)]
        try:
            for idx, layer in enumerate(self.layers):
                handles.append(
                    layer.register_forward_pre_hook(self._layer_hook(idx), with_kwargs=True)
                )
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _on_model(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.calls += 1
        if self.calls == 1:
            self.keep = self.all_rows
            self._scores.clear()

    def _layer_hook(self, idx: int) -> Callable[..., Any]:
        def hook(
            module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
            if self.calls == 1:
                return self._prefill(idx, module, args, kwargs)
            return self._decode(idx, args, kwargs)

        return hook

    def _prefill(
        self, idx: int, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        hidden = args[0] if args else kwargs["hidden_states"]
        if idx == 0 and hidden.shape[1] != self.length:
            raise ModelError(
                f"prefill got {hidden.shape[1]} positions for a {self.length}-token prompt; "
                "in-LLM dropping needs one unchunked prefill of the whole prompt"
            )
        changed = self.keep.numel() != self.length
        if changed:
            kwargs = _slice_kwargs(kwargs, self.keep, self.length)
            if self.compact:
                kwargs = self._compacted(hidden, kwargs)
        for n, stage in enumerate(self.stages):
            if stage.score_layer == idx:
                self._scores[n] = stage.score(module, hidden, kwargs)
        for n, stage in enumerate(self.stages):
            if stage.drop_layer == idx:
                scores = self._scores.pop(n)
                if scores.numel() != hidden.shape[1]:  # another stage dropped in between
                    raise ModelError(f"stages overlap at layer {idx}: {self.stages}")
                local = self._select(scores, stage)
                if local.numel() != hidden.shape[1]:
                    hidden = hidden.index_select(1, local)
                    kwargs = _slice_kwargs(kwargs, local, int(self.keep.numel()))
                    self.keep = self.keep[local]
                    changed = True
                    if self.compact:
                        kwargs = self._compacted(hidden, kwargs)
        self.tokens_per_layer[idx] = int(hidden.shape[1])
        if not changed:
            return None
        self.layer_keep[idx] = self.keep
        if args:
            return (hidden, *args[1:]), kwargs
        kwargs["hidden_states"] = hidden
        return args, kwargs

    def _positions(
        self, hidden: torch.Tensor, pos: torch.Tensor, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """``kwargs`` with position ids ``pos`` (1, n) and their rotary cos/sin."""
        out = dict(kwargs, position_ids=pos)
        if kwargs.get("position_embeddings") is not None:
            out["position_embeddings"] = self.lm.rotary_emb(hidden, pos)
        return out

    def _compacted(self, hidden: torch.Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
        # the release renumbers the rows that remain 0..n-1 after every drop
        n = int(self.keep.numel())
        pos = torch.arange(n, device=hidden.device).unsqueeze(0)
        return self._positions(hidden, pos, kwargs)

    def _select(self, scores: torch.Tensor, stage: Stage) -> torch.Tensor:
        """Local indices of the rows that go on: every non-image row + the top image rows."""
        image = self.droppable[self.keep]
        candidates = torch.nonzero(image).flatten()
        k = stage.kept(self.n_image, int(candidates.numel()))
        if k == candidates.numel():
            return torch.arange(int(image.numel()), device=image.device)
        order = torch.sort(scores[candidates].float(), descending=True, stable=True).indices
        kept = candidates[order[:k]]
        return torch.sort(torch.cat([torch.nonzero(~image).flatten(), kept])).values

    def _decode(
        self, idx: int, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        keep = self.layer_keep[idx]
        mask = kwargs.get("attention_mask")
        if keep is not None and self.compact:
            # this layer's cache holds keep.numel() prompt rows at 0..n-1: the new token
            # follows them (its stock position less the rows dropped before this layer)
            hidden = args[0] if args else kwargs["hidden_states"]
            pos = kwargs.get("position_ids")
            if not isinstance(pos, torch.Tensor):
                step = kwargs.get("cache_position")
                if step is None:
                    raise ModelError("compact positions need position_ids in decoding")
                pos = step.unsqueeze(0)
            kwargs = self._positions(hidden, pos - (self.length - int(keep.numel())), kwargs)
        if keep is None or mask is None:
            if keep is not None and self.compact:
                return args, kwargs
            return None  # SDPA without a mask: the new token sees this layer's whole cache
        if not isinstance(mask, torch.Tensor) or mask.ndim != 4:
            raise ModelError(f"cannot decode under a {type(mask).__name__} attention mask")
        # The mask is sized for layer 0's cache (the full prompt + generated tokens).
        new = torch.arange(self.length, mask.shape[-1], device=keep.device)
        cols = torch.cat([keep, new]).to(mask.device)
        kwargs = dict(kwargs, attention_mask=mask.index_select(-1, cols))
        return args, kwargs
