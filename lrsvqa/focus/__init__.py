"""Region Focus: score vision tokens by the question's attention, choose tiles coarse to fine."""

from lrsvqa.focus.config import SELECTORS, FocusConfig
from lrsvqa.focus.scoring import AttentionScorer, TokenScorer, default_focus_layer
from lrsvqa.focus.select import FocusResult, LevelFocus, TileChoice, select

__all__ = [
    "SELECTORS",
    "AttentionScorer",
    "FocusConfig",
    "FocusResult",
    "LevelFocus",
    "TileChoice",
    "TokenScorer",
    "default_focus_layer",
    "select",
]
