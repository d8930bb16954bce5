"""Read and validate the LRS-VQA annotation file (``LRS_VQA_merged.jsonl``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lrsvqa.bench.records import CATEGORIES, SIZE_BINS, SOURCES, Question, source_of
from lrsvqa.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: At most this many problems are listed in one DataError.
MAX_REPORTED_PROBLEMS = 20

_REQUIRED = ("question_id", "image", "category", "text", "ground_truth", "image_size")


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, parsed_value)`` for every non-blank line of a JSONL file.

    Raises DataError naming the file and line of the first malformed line.
    """
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc


def _check_choice(kind: str, values: Iterable[str] | None, valid: Sequence[str]) -> set[str] | None:
    if values is None:
        return None
    chosen = {values} if isinstance(values, str) else set(values)
    unknown = sorted(chosen - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown {kind} {', '.join(repr(u) for u in unknown)}; "
            f"valid: {', '.join(repr(v) for v in valid)}"
        )
    return chosen


def _numbers(value: Any, n: int) -> tuple[float, ...] | None:
    if (
        isinstance(value, list)
        and len(value) == n
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        return tuple(float(v) for v in value)
    return None


def _parse_question(row: Any, image_root: Path | None) -> Question:
    """Build a Question from one parsed row; raise ValueError saying what is wrong."""
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    missing = [k for k in _REQUIRED if k not in row]
    if missing:
        raise ValueError(f"missing required field(s) {', '.join(missing)}")
    for key in ("question_id", "image", "category", "text", "ground_truth"):
        if not isinstance(row[key], str):
            raise ValueError(f"field {key!r} must be a string, got {row[key]!r}")
    qid: str = row["question_id"]
    if not qid:
        raise ValueError("empty question_id")
    source = source_of(qid)
    if source not in SOURCES:
        raise ValueError(
            f"question_id {qid!r} does not start with a known source "
            f"({', '.join(SOURCES)}) followed by '_'"
        )
    if row["category"] not in CATEGORIES:
        raise ValueError(
            f"unknown category {row['category']!r}; valid: {', '.join(map(repr, CATEGORIES))}"
        )
    size = row["image_size"]
    if not (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise ValueError(f"image_size must be [width, height] positive integers, got {size!r}")
    box = _optional_box(row, "hbox", 4)
    hbox = None if box is None else (box[0], box[1], box[2], box[3])
    rbox = _optional_box(row, "rbox", 8)
    size_bin = row.get("size_bin")
    if size_bin is not None and size_bin not in SIZE_BINS:
        raise ValueError(f"unknown size_bin {size_bin!r}; valid: {', '.join(SIZE_BINS)}")
    abs_size = row.get("abs_size")
    if abs_size is not None and not isinstance(abs_size, str):
        raise ValueError(f"abs_size must be a string, got {abs_size!r}")
    return Question(
        question_id=qid,
        source=source,
        image=row["image"],
        image_path=None if image_root is None else image_root / row["image"],
        category=row["category"],
        text=row["text"],
        ground_truth=row["ground_truth"],
        image_size=(size[0], size[1]),
        hbox=hbox,
        rbox=rbox,
        abs_size=abs_size,
        size_bin=size_bin,
    )


def _optional_box(row: dict[str, Any], key: str, n: int) -> tuple[float, ...] | None:
    value = row.get(key)
    if value is None:
        return None
    box = _numbers(value, n)
    if box is None:
        raise ValueError(f"{key} must be a list of {n} numbers, got {value!r}")
    return box


def load_lrsvqa(
    jsonl: str | Path,
    image_root: str | Path | None = None,
    *,
    sources: Iterable[str] | None = None,
    categories: Iterable[str] | None = None,
    size_bins: Iterable[str] | None = None,
    limit: int | None = None,
) -> list[Question]:
    """Load LRS-VQA questions from ``jsonl``, validated, optionally filtered.

    ``image_root`` resolves each question's relative ``image`` to ``image_path``.
    ``sources``, ``categories`` and ``size_bins`` keep only matching questions
    (an unknown value raises ConfigError listing the valid ones); ``limit``
    keeps the first N after filtering. The whole file is validated either way:
    malformed JSON, a missing or mistyped field, an unknown category or source,
    or a duplicate ``question_id`` raise DataError with the file and line numbers.
    """
    path = Path(jsonl)
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    want_sources = _check_choice("source", sources, SOURCES)
    want_categories = _check_choice("category", categories, CATEGORIES)
    want_bins = _check_choice("size_bin", size_bins, SIZE_BINS)
    root = None if image_root is None else Path(image_root)

    questions: list[Question] = []
    problems: list[str] = []
    first_line: dict[str, int] = {}
    for number, row in iter_jsonl(path):
        try:
            question = _parse_question(row, root)
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        previous = first_line.setdefault(question.question_id, number)
        if previous != number:
            problems.append(
                f"lines {previous} and {number}: duplicate question_id {question.question_id!r}"
            )
            continue
        questions.append(question)
    if problems:
        shown = "; ".join(problems[:MAX_REPORTED_PROBLEMS])
        more = len(problems) - MAX_REPORTED_PROBLEMS
        suffix = f"; … and {more} more" if more > 0 else ""
        raise DataError(f"{path}: {len(problems)} invalid row(s): {shown}{suffix}")
    if not questions:
        raise DataError(f"{path}: no questions in file")

    kept = [
        q
        for q in questions
        if (want_sources is None or q.source in want_sources)
        and (want_categories is None or q.category in want_categories)
        and (want_bins is None or q.size_bin in want_bins)
    ]
    if limit is not None:
        kept = kept[:limit]
    log.info("loaded %d of %d LRS-VQA questions from %s", len(kept), len(questions), path)
    return kept


def missing_images(questions: Iterable[Question]) -> list[Path]:
    """Image files the questions refer to that do not exist (each listed once).

    Raises ConfigError if the questions were loaded without ``image_root``.
    """
    seen: set[Path] = set()
    missing: list[Path] = []
    for q in questions:
        if q.image_path is None:
            raise ConfigError(
                f"question {q.question_id} has no image_path: pass image_root to load_lrsvqa"
            )
        if q.image_path in seen:
            continue
        seen.add(q.image_path)
        if not q.image_path.is_file():
            missing.append(q.image_path)
    return missing
