"""Pruning inside the LLM: which image tokens each decoder layer still sees.

``generate_pruned`` wraps ``Adapter.generate`` with PyramidDrop or FastV hooks on the stock
model and returns the generation plus the tokens each decoder layer saw in prefill, for
``pipeline.cost.prefill_flops``. ``method="none"`` is exactly ``Adapter.generate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from lrsvqa.errors import ConfigError

if TYPE_CHECKING:
    from lrsvqa.models.base import Adapter, Generation, PreparedInputs

LLM_METHODS = ("none", "pdrop", "fastv")
FASTV_QUERIES = ("all", "last")
PDROP_POSITIONS = ("keep", "compact")
PDROP_ROUNDINGS = ("compound", "release")


def default_pdrop_layers(num_layers: int) -> tuple[int, ...]:
    """The reference's 4 stages scaled to depth: boundaries at L/4, L/2, 3L/4."""
    return tuple(sorted({num_layers * i // 4 for i in (1, 2, 3)} - {0}))


@dataclass(frozen=True)
class LLMPruneConfig:
    """Dropping of image tokens inside the LLM (saved with every result)."""

    method: str = field(
        default="none",
        metadata={
            "help": "Drop image tokens inside the LLM: PyramidDrop or FastV.",
            "choices": LLM_METHODS,
        },
    )
    pdrop_layers: tuple[int, ...] | None = field(
        default=None,
        metadata={
            "help": "PyramidDrop stage boundaries (default: L/4, L/2, 3L/4).",
            "metavar": "L1,L2,…",
        },
    )
    pdrop_ratio: float = field(
        default=0.5,
        metadata={"help": "PyramidDrop λ: share of image tokens kept at each boundary, in (0, 1]."},
    )
    fastv_k: int = field(default=2, metadata={"help": "FastV: layers that see all tokens."})
    fastv_ratio: float = field(
        default=0.5,
        metadata={"help": "FastV R: share of image tokens dropped after layer K, in [0, 1)."},
    )
    fastv_query: str = field(
        default="all",
        metadata={
            "help": "FastV ranks by attention from all queries (paper) or from the last token.",
            "choices": FASTV_QUERIES,
        },
    )
    # after a drop: "keep" each kept token's original position id, or "compact" them to
    # 0..n-1 as the PyramidDrop / LRS-VQA release does (decoding then subtracts the drops)
    pdrop_positions: str = field(
        default="keep",
        metadata={
            "help": "After a PyramidDrop drop: keep original position ids, or renumber them "
            "0..n-1 as the release does (1-D RoPE models only).",
            "choices": PDROP_POSITIONS,
        },
    )

    # how many image tokens stage s keeps: round(n_{s-1} * λ) of the tokens still present
    # ("compound"), or int(N * λ^s) of the original N (the release's rule)
    pdrop_rounding: str = field(
        default="compound",
        metadata={
            "help": "PyramidDrop's kept count at stage s: λ times the tokens still present "
            "(rounded half up), or int(N·λ^s) of the original N as the release.",
            "choices": PDROP_ROUNDINGS,
        },
    )

    @classmethod
    def release(cls, **overrides: Any) -> LLMPruneConfig:
        """The release's PyramidDrop bookkeeping (no dropping unless ``method`` says so):
        positions re-compacted after each drop, ``int(N * λ**s)`` kept at stage ``s``."""
        base: dict[str, Any] = {"pdrop_positions": "compact", "pdrop_rounding": "release"}
        return cls(**{**base, **overrides})

    def stage_counts(self, n: int, stages: int) -> list[int]:
        """Image tokens kept after each of ``stages`` PyramidDrop stages, from ``n``."""
        from lrsvqa.prune.pyramid_drop import pdrop_stages

        out, current = [], n
        release = self.pdrop_rounding == "release"
        for stage in pdrop_stages(range(stages), self.pdrop_ratio, original=release):
            current = stage.kept(n, current)
            out.append(current)
        return out

    def __post_init__(self) -> None:
        if self.pdrop_layers is not None and not isinstance(self.pdrop_layers, tuple):
            object.__setattr__(self, "pdrop_layers", tuple(self.pdrop_layers))
        self._check()

    def _check(self) -> None:
        if self.method not in LLM_METHODS:
            raise ConfigError(
                f"unknown LLM pruning method {self.method!r}; choose one of "
                f"{', '.join(LLM_METHODS)}"
            )
        if not 0.0 < self.pdrop_ratio <= 1.0:
            raise ConfigError(
                f"pdrop_ratio (lambda) must be in (0, 1], got {self.pdrop_ratio}; "
                "1 keeps every token, 0.5 is the reference"
            )
        if not 0.0 <= self.fastv_ratio < 1.0:
            raise ConfigError(
                f"fastv_ratio (R) must be in [0, 1), got {self.fastv_ratio}; "
                "0 drops nothing, 0.5 is the reference"
            )
        if isinstance(self.fastv_k, bool) or not isinstance(self.fastv_k, int) or self.fastv_k < 1:
            raise ConfigError(f"fastv_k must be an integer >= 1, got {self.fastv_k!r}")
        if self.fastv_query not in FASTV_QUERIES:
            raise ConfigError(
                f"fastv_query must be one of {', '.join(FASTV_QUERIES)}, got {self.fastv_query!r}"
            )
        if self.pdrop_rounding not in PDROP_ROUNDINGS:
            raise ConfigError(
                f"pdrop_rounding must be one of {', '.join(PDROP_ROUNDINGS)}, "
                f"got {self.pdrop_rounding!r}"
            )
        if self.pdrop_positions not in PDROP_POSITIONS:
            raise ConfigError(
                f"pdrop_positions must be one of {', '.join(PDROP_POSITIONS)}, "
                f"got {self.pdrop_positions!r}"
            )
        layers = self.pdrop_layers
        if layers is not None:
            if not layers:
                raise ConfigError("pdrop_layers is empty; give stage boundaries or leave it unset")
            if any(isinstance(b, bool) or not isinstance(b, int) for b in layers):
                raise ConfigError(f"pdrop_layers must be integers, got {layers!r}")
            if any(b < 1 for b in layers):
                raise ConfigError(
                    f"pdrop_layers must be >= 1 (layer 0 sees every token), got {layers!r}"
                )
            if any(b >= a for b, a in pairwise(layers)):
                raise ConfigError(f"pdrop_layers must be strictly increasing, got {layers!r}")

    def validate(self, num_layers: int) -> None:
        """Check against a model of ``num_layers`` decoder layers; ConfigError if it fails."""
        self._check()
        if self.method == "none":
            return
        if self.method == "pdrop":
            layers = self.boundaries(num_layers)
            if not layers or layers[-1] >= num_layers:
                raise ConfigError(
                    f"pdrop_layers {layers!r} must lie in 1..{num_layers - 1}: the model has "
                    f"{num_layers} decoder layers"
                )
        elif self.fastv_k >= num_layers:
            raise ConfigError(
                f"fastv_k={self.fastv_k} must be below the model's {num_layers} decoder layers"
            )

    def boundaries(self, num_layers: int) -> tuple[int, ...]:
        """PyramidDrop's stage boundaries for a model of ``num_layers`` layers."""
        if self.pdrop_layers is not None:
            return self.pdrop_layers
        return default_pdrop_layers(num_layers)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.pdrop_layers is not None:
            data["pdrop_layers"] = list(self.pdrop_layers)
        if self.pdrop_rounding == "compound":  # older run manifests still match
            del data["pdrop_rounding"]
        return data


def stages_for(config: LLMPruneConfig, num_layers: int) -> Sequence[Any]:
    """The drop stages of ``config`` for a model of ``num_layers`` decoder layers."""
    from lrsvqa.prune.fastv import fastv_stages
    from lrsvqa.prune.pyramid_drop import pdrop_stages

    if config.method == "pdrop":
        return pdrop_stages(
            config.boundaries(num_layers),
            config.pdrop_ratio,
            original=config.pdrop_rounding == "release",
        )
    if config.method == "fastv":
        return fastv_stages(config.fastv_k, config.fastv_ratio, config.fastv_query)
    return []


def planned_tokens_per_layer(
    config: LLMPruneConfig, num_layers: int, length: int, n_image: int
) -> list[int]:
    """Tokens each decoder layer sees in prefill for a ``length``-token prompt holding
    ``n_image`` droppable image tokens (separators and text are never dropped)."""
    config.validate(num_layers)
    stages = stages_for(config, num_layers)
    drops = {s.drop_layer: s for s in stages}
    out: list[int] = []
    n = n_image
    for i in range(num_layers):
        if i in drops:
            n = drops[i].kept(n_image, n)
        out.append(length - n_image + n)
    return out


def generate_pruned(
    adapter: Adapter,
    inputs: PreparedInputs,
    config: LLMPruneConfig,
    *,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    output_scores: bool = False,
) -> tuple[Generation, list[int]]:
    """Generate with image tokens dropped inside the LLM.

    Returns the generation and the number of tokens each decoder layer saw in prefill.
    """
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "output_scores": output_scores,
    }
    if config.method == "none":
        config.validate(max(adapter.capabilities.num_layers, 1))
        generation = adapter.generate(inputs, **kwargs)
        return generation, [inputs.length] * adapter.capabilities.num_layers

    from lrsvqa.prune.pyramid_drop import RowDropper

    lm = adapter.language_model()
    num_layers = len(lm.layers)
    config.validate(num_layers)
    compact = config.method != "none" and config.pdrop_positions == "compact"
    if compact and adapter.capabilities.mrope:
        raise ConfigError(
            "pdrop_positions 'compact' renumbers 1-D positions, as the LLaVA-based release "
            "does; M-RoPE models (Qwen2/2.5-VL) keep their 3-D ids: use 'keep'"
        )
    dropper = RowDropper(lm, stages_for(config, num_layers), inputs, compact=compact)
    with dropper.installed():
        generation = adapter.generate(inputs, **kwargs)
    return generation, list(dropper.tokens_per_layer)


__all__ = [
    "FASTV_QUERIES",
    "LLM_METHODS",
    "PDROP_POSITIONS",
    "LLMPruneConfig",
    "default_pdrop_layers",
    "generate_pruned",
    "planned_tokens_per_layer",
    "stages_for",
]
