"""Read the remote-sensing part of MME-RealWorld (multiple choice)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from lrsvqa.bench.loader import iter_jsonl
from lrsvqa.bench.records import MMEQuestion
from lrsvqa.errors import DataError

log = logging.getLogger(__name__)

#: ``Subtask`` value of the remote-sensing subset.
REMOTE_SENSING = "Remote Sensing"

_CHOICE_KEYS = ("Answer choices", "Answer Choices")
_LETTER = re.compile(r"^[A-E]$")


def _read_rows(path: Path) -> list[tuple[int, Any]]:
    """Rows with their position: a JSON list (index + 1) or JSONL (line number)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
        return list(enumerate(rows, start=1))
    return list(iter_jsonl(path))


def _parse(row: Any, image_root: Path | None) -> MMEQuestion:
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    choice_key = next((k for k in _CHOICE_KEYS if k in row), None)
    required = ("Question_id", "Image", "Text", "Ground truth")
    missing = [k for k in required if k not in row]
    if choice_key is None:
        missing.append("Answer choices")
    if missing:
        raise ValueError(f"missing required field(s) {', '.join(missing)}")
    choices = row[choice_key]
    if not (isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices)):
        raise ValueError(f"{choice_key!r} must be a non-empty list of strings")
    truth = row["Ground truth"]
    if not (isinstance(truth, str) and _LETTER.match(truth)):
        raise ValueError(f"'Ground truth' must be one letter A-E, got {truth!r}")
    for key in ("Image", "Text"):
        if not isinstance(row[key], str):
            raise ValueError(f"field {key!r} must be a string")
    image = row["Image"]
    return MMEQuestion(
        question_id=str(row["Question_id"]),
        image=image,
        image_path=None if image_root is None else image_root / image,
        text=row["Text"],
        choices=tuple(choices),
        ground_truth=truth,
        category=str(row.get("Category", "")),
        subtask=str(row.get("Subtask", "")),
        task=str(row.get("Task", "")),
    )


def load_mme_rs(
    json_path: str | Path,
    image_root: str | Path | None = None,
    *,
    subtask: str | None = REMOTE_SENSING,
) -> list[MMEQuestion]:
    """Load MME-RealWorld questions of one subtask (remote sensing by default).

    The file is MME-RealWorld's JSON list (or JSONL) of objects with fields:

    - ``Question_id`` (required): unique id, kept as a string;
    - ``Image`` (required): image path relative to ``image_root``;
    - ``Text`` (required): the question;
    - ``Answer choices`` (required; ``Answer Choices`` also accepted): list of
      options such as ``"(A) 3"``;
    - ``Ground truth`` (required): the correct letter, ``A``–``E``;
    - ``Category``, ``Subtask``, ``Task`` (optional strings).

    Rows whose ``Subtask`` differs from ``subtask`` are dropped (``None`` keeps
    all). Malformed rows or duplicate ids raise DataError with positions
    (list index + 1 for a JSON list, line number for JSONL).
    """
    path = Path(json_path)
    root = None if image_root is None else Path(image_root)
    questions: list[MMEQuestion] = []
    problems: list[str] = []
    first: dict[str, int] = {}
    total = 0
    for position, row in _read_rows(path):
        total += 1
        try:
            q = _parse(row, root)
        except ValueError as exc:
            problems.append(f"row {position}: {exc}")
            continue
        previous = first.setdefault(q.question_id, position)
        if previous != position:
            problems.append(
                f"rows {previous} and {position}: duplicate Question_id {q.question_id}"
            )
            continue
        if subtask is None or q.subtask == subtask:
            questions.append(q)
    if problems:
        raise DataError(f"{path}: {len(problems)} invalid row(s): " + "; ".join(problems[:20]))
    if not questions:
        raise DataError(f"{path}: no questions with Subtask {subtask!r} among {total} rows")
    log.info("loaded %d of %d MME-RealWorld questions from %s", len(questions), total, path)
    return questions
