"""The ``ask`` pipeline: scene → pyramid → focus → pruned tokens → answer."""

from lrsvqa.pipeline.answer import Answer
from lrsvqa.pipeline.cost import CostReport, prefill_flops
from lrsvqa.pipeline.evidence import Evidence, TileEvidence
from lrsvqa.pipeline.pipeline import MAX_QUESTION_CHARS, Pipeline, ask, check_question
from lrsvqa.pipeline.progress import Progress, ProgressCallback
from lrsvqa.pipeline.tables import to_geodataframe

__all__ = [
    "MAX_QUESTION_CHARS",
    "Answer",
    "CostReport",
    "Evidence",
    "Pipeline",
    "Progress",
    "ProgressCallback",
    "TileEvidence",
    "ask",
    "check_question",
    "prefill_flops",
    "to_geodataframe",
]
