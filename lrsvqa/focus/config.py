"""Configuration of the focus stage."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from lrsvqa.errors import ConfigError

SELECTORS = ("rfm", "all", "uniform", "random", "thumbnail")
TILE_SCORES = ("sum", "max", "mean")


@dataclass(frozen=True)
class FocusConfig:
    """How vision tokens are scored and tiles chosen, level by level.

    ``selector``: ``rfm`` (the model's own text→vision attention, default), ``all``
    (every tile of the finest level that fits the budget, no pruning), ``uniform``,
    ``random`` (seeded) or ``thumbnail`` (global view only).
    """

    selector: str = field(
        default="rfm",
        metadata={
            "help": "How tiles are chosen: rfm (attention), all (no pruning), uniform, random, "
            "thumbnail.",
            "choices": SELECTORS,
        },
    )
    layers: tuple[int, ...] | None = field(
        default=None,
        metadata={
            "help": "Decoder layer(s) whose attention ranks tokens (repeatable; default: the "
            "model's declared focus layers, else the last layer of the first quarter, at least 1)."
        },
    )
    keep_ratio: float = field(
        default=0.25,
        metadata={"help": "Share of each level's vision tokens kept (and passed to the LLM)."},
    )
    max_tiles: int = field(default=6, metadata={"help": "Tiles chosen per finer level."})
    token_budget: int = field(
        default=2500,
        metadata={"help": "Most vision tokens reaching the LLM (thumbnail included)."},
    )
    encode_budget: int | None = field(
        default=None,
        metadata={"help": "Most vision tokens encoded in all (default: no limit)."},
    )
    max_depth: int | None = field(
        default=None,
        metadata={"help": "Finer levels visited below level 0 (default: to native)."},
    )
    tile_score: str = field(
        default="sum",
        metadata={"help": "How kept token scores add up to a tile score.", "choices": TILE_SCORES},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the random selector."})
    focus: str = field(
        default="attention",
        metadata={
            "help": "Token scorer: the model's own attention, or a distilled RFM from "
            "`lrsvqa train-rfm`.",
            "metavar": "attention|distilled:PATH",
        },
    )

    def __post_init__(self) -> None:
        if self.selector not in SELECTORS:
            raise ConfigError(
                f"unknown selector {self.selector!r}; choose one of {', '.join(SELECTORS)}"
            )
        if not 0.0 < self.keep_ratio <= 1.0:
            raise ConfigError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        if self.max_tiles < 1:
            raise ConfigError(f"max_tiles must be at least 1, got {self.max_tiles}")
        if self.token_budget < 1:
            raise ConfigError(f"token_budget must be positive, got {self.token_budget}")
        if self.encode_budget is not None and self.encode_budget < 1:
            raise ConfigError(f"encode_budget must be positive, got {self.encode_budget}")
        if self.max_depth is not None and self.max_depth < 0:
            raise ConfigError(f"max_depth must be >= 0, got {self.max_depth}")
        if self.tile_score not in TILE_SCORES:
            raise ConfigError(
                f"tile_score must be one of {', '.join(TILE_SCORES)}, got {self.tile_score!r}"
            )
        if self.focus != "attention" and not (
            self.focus.startswith("distilled:") and len(self.focus) > len("distilled:")
        ):
            raise ConfigError(
                f"focus {self.focus!r}: use 'attention' or 'distilled:PATH' (a train-rfm output folder)"
            )
        if self.layers is not None and (not self.layers or min(self.layers) < 0):
            raise ConfigError(f"layers must be non-negative layer indices, got {self.layers}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
