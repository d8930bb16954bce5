"""Region Focus: score vision tokens by the question's attention, choose tiles coarse to fine."""

from lrsvqa.focus.config import SELECTORS, FocusConfig
from lrsvqa.focus.scoring import AttentionScorer, ScoreResult, TokenScorer, default_focus_layer
from lrsvqa.focus.select import FocusResult, LevelFocus, TileChoice, levels_to_visit, select

__all__ = [
    "SELECTORS",
    "AttentionScorer",
    "FocusConfig",
    "FocusResult",
    "LevelFocus",
    "ScoreResult",
    "TileChoice",
    "TokenScorer",
    "default_focus_layer",
    "levels_to_visit",
    "select",
]
