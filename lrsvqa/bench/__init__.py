"""Benchmarks: LRS-VQA and MME-RealWorld (remote sensing) loaders and the scorer.

Import is light: WordNet (through NLTK) is loaded only when scoring needs it.
"""

from __future__ import annotations

from lrsvqa.bench.loader import load_lrsvqa, missing_images
from lrsvqa.bench.mme import load_mme_rs
from lrsvqa.bench.records import (
    CATEGORIES,
    SIZE_BINS,
    SOURCES,
    CategoryScore,
    GroupScore,
    MMEQuestion,
    Question,
    ScoreReport,
)
from lrsvqa.bench.scorer import AnswerRow, normalise, read_answers, score, score_files
from lrsvqa.bench.wordnet import load_wordnet

__all__ = [
    "CATEGORIES",
    "SIZE_BINS",
    "SOURCES",
    "AnswerRow",
    "CategoryScore",
    "GroupScore",
    "MMEQuestion",
    "Question",
    "ScoreReport",
    "load_lrsvqa",
    "load_mme_rs",
    "load_wordnet",
    "missing_images",
    "normalise",
    "read_answers",
    "score",
    "score_files",
]
