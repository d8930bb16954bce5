"""FastV (Chen et al., 2024, "An Image is Worth 1/2 Tokens After Layer 2"), the baseline.

The first ``K`` decoder layers see every token; the image tokens are ranked by the attention
they receive in layer ``K`` (counting from 1, i.e. index ``K - 1``), and the ``R`` share
with the least is dropped for layers ``K..L-1``. "Attention received" is, by default, the
paper's definition: the attention weight each key gets, averaged over all query positions
(causal: a query adds zero for keys after it) and over heads. ``query="last"`` ranks by the
last token's attention only, as FastV's released code does. The dropping itself is
PyramidDrop's one-stage machinery (``pyramid_drop.RowDropper``); both rank with the one
attention primitive of ``lrsvqa.models.attention``.
"""

from __future__ import annotations

from lrsvqa.models.attention import last_token_attention, received_attention
from lrsvqa.prune.pyramid_drop import Stage, keep_count


def fastv_stages(k: int, ratio: float, query: str = "all") -> list[Stage]:
    """One stage: score in layer index ``k - 1``, drop ``ratio`` of image rows from ``k`` on."""
    score = received_attention if query == "all" else last_token_attention
    return [Stage(k - 1, k, 1.0 - ratio, score)]


__all__ = ["fastv_stages", "keep_count", "received_attention"]
