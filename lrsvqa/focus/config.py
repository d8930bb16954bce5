"""Configuration of the focus stage."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from lrsvqa.errors import ConfigError

SELECTORS = ("rfm", "all", "uniform", "random", "thumbnail")
TILE_SCORES = ("sum", "max", "mean")
TILE_RULES = ("best", "hit")
ROUNDINGS = ("ceil", "floor")
NEWLINE_MODES = ("excluded", "in-softmax")


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

    tile_rule: str = field(
        default="best",
        metadata={
            "help": "Tiles of the next level: the --max-tiles best by score, or every tile hit "
            "by a kept token (the LRS-VQA release's rule; --max-tiles is then not read).",
            "choices": TILE_RULES,
        },
    )
    rounding: str = field(
        default="ceil",
        metadata={
            "help": "Tokens kept = keep ratio x tokens, rounded up (at least 1) or down as "
            "the release's int().",
            "choices": ROUNDINGS,
        },
    )
    newlines: str = field(
        default="excluded",
        metadata={
            "help": "Newline tokens (LLaVA families) in focus passes: excluded from the "
            "ranking, or inside the softmax, ranked, always kept and mapped to the next level "
            "as the release does (its bias toward the right-most column).",
            "choices": NEWLINE_MODES,
        },
    )

    @classmethod
    def release(cls, **overrides: Any) -> FocusConfig:
        """The LRS-VQA release's focus (``eval/model_rsvqa.py`` with ``--pyramid_crop``):
        the model's RFM ranks the coarsest level's tokens, the top ``int(25 %)`` (newline
        tokens inside the softmax and always kept) pick *every* next-level tile they hit
        (``get_next_level_fea`` sets its select count to ``len(counts)``), and there is
        exactly one zoom step (``forward`` of ``PyramidPruneModule`` stops after
        ``next_level_index`` 1), where the top ``int(25 %)`` tokens go to the LLM."""
        base: dict[str, Any] = {
            "selector": "rfm",
            "keep_ratio": 0.25,
            "tile_rule": "hit",
            "max_depth": 1,
            "rounding": "floor",
            "newlines": "in-softmax",
        }
        return cls(**{**base, **overrides})

    def keep_count(self, n: int) -> int:
        """Tokens kept out of ``n``: ``ceil(keep_ratio * n)``, at least 1 (default), or
        ``int(keep_ratio * n)`` (the release's ``top_k``)."""
        if self.rounding == "floor":
            return int(n * self.keep_ratio)
        return max(1, math.ceil(self.keep_ratio * n)) if n else 0

    def __post_init__(self) -> None:
        for name, allowed in (
            ("tile_rule", TILE_RULES),
            ("rounding", ROUNDINGS),
            ("newlines", NEWLINE_MODES),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
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
        data = asdict(self)
        # the release's knobs appear only when set, so older run manifests still match
        for name in ("tile_rule", "rounding", "newlines"):
            if data[name] == _field_default(name):
                del data[name]
        return data


def _field_default(name: str) -> Any:
    return next(f.default for f in fields(FocusConfig) if f.name == name)
