"""The answer file of a benchmark run: append-only JSON lines that survive ``kill -9``.

Every line is written with one ``os.write`` and followed by ``fsync``, so a crash
can only tear the last line. ``AnswerLog`` locks the file, truncates a torn
last line (no trailing newline, or not valid JSON) back to the last good line,
and then only ever appends. The file is never opened with ``'w'``.

One answer line (keys in this order; ``null`` where unknown):

``question_id``, ``text`` (the model's answer), ``ground_truth``, ``category``,
``source``, ``size_bin``, ``image``, ``image_size`` [w, h], ``hbox`` (ground-truth
box or null), ``question``, ``finest_level``, ``boxes`` (the selected
finest-level tiles as [x1, y1, x2, y2] native pixels), ``evidence`` (all levels,
as the answerer reports them) and ``cost``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrsvqa.bench.loader import MAX_REPORTED_PROBLEMS
from lrsvqa.bench.records import CATEGORIES, MMEQuestion, Question
from lrsvqa.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Keys of an answer line, in the order they are written.
ANSWER_KEYS: tuple[str, ...] = (
    "question_id",
    "text",
    "ground_truth",
    "category",
    "source",
    "size_bin",
    "image",
    "image_size",
    "hbox",
    "question",
    "finest_level",
    "boxes",
    "evidence",
    "cost",
)


def finest_boxes(evidence: Mapping[str, Any] | None) -> tuple[int | None, list[list[float]]]:
    """``(finest_level, boxes)``: the tiles selected at the finest level reached."""
    if not evidence:
        return None, []
    levels = [lv for lv in evidence.get("levels") or [] if isinstance(lv, Mapping)]
    finest = evidence.get("finest_level")
    if finest is None and levels:
        finest = max(int(lv.get("level", 0)) for lv in levels)
    boxes: list[list[float]] = []
    for lv in levels:
        if lv.get("level") == finest:
            boxes.extend([float(v) for v in t["box"]] for t in lv.get("tiles") or [])
    return finest, boxes


def answer_record(question: Question, answer: Mapping[str, Any]) -> dict[str, Any]:
    """The answer line for ``question`` from an answer's ``to_dict()``."""
    evidence = answer.get("evidence")
    finest, boxes = finest_boxes(evidence)
    return {
        "question_id": question.question_id,
        "text": answer.get("text", ""),
        "ground_truth": question.ground_truth,
        "category": question.category,
        "source": question.source,
        "size_bin": question.size_bin,
        "image": question.image,
        "image_size": list(question.image_size),
        "hbox": None if question.hbox is None else list(question.hbox),
        "question": question.text,
        "finest_level": finest,
        "boxes": boxes,
        "evidence": evidence,
        "cost": answer.get("cost"),
    }


def mme_answer_record(question: MMEQuestion, answer: Mapping[str, Any]) -> dict[str, Any]:
    """The answer line for an MME-RealWorld question (``text``: the raw model output)."""
    from lrsvqa.bench.mme_score import extract_choice

    evidence = answer.get("evidence")
    finest, boxes = finest_boxes(evidence)
    text = answer.get("text", "")
    return {
        "benchmark": "mme-rs",
        "question_id": question.question_id,
        "text": text,
        "prediction": extract_choice(text, question.choices),
        "ground_truth": question.ground_truth,
        "choices": list(question.choices),
        "category": question.category,
        "subtask": question.subtask,
        "task": question.task,
        "image": question.image,
        "question": question.prompt(),
        "finest_level": finest,
        "boxes": boxes,
        "evidence": evidence,
        "cost": answer.get("cost"),
    }


def _encode(record: Mapping[str, Any]) -> bytes:
    # ASCII escapes: a model's stray surrogate can never make a line unwritable
    return (json.dumps(record, separators=(",", ":")) + "\n").encode("ascii")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _last_good_end(data: bytes) -> int:
    """Byte offset just after the last complete, parseable line of ``data``."""
    end = len(data)
    if data and not data.endswith(b"\n"):
        end = data.rfind(b"\n") + 1  # drop the unterminated tail
    else:
        start = data.rfind(b"\n", 0, max(end - 1, 0)) + 1
        last = data[start:end]
        if last.strip():
            try:
                json.loads(last)
            except ValueError:
                end = start  # a terminated but garbled last line (e.g. zero-filled)
    return end


@dataclass
class AnswerLog:
    """An exclusive, append-only handle on an answer (or error) file.

    Use as a context manager: opening locks the file (a second writer gets a
    ConfigError), repairs a torn last line and leaves the offset at the end.
    """

    path: Path
    fd: int = -1
    repaired_bytes: int = 0

    def __enter__(self) -> AnswerLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            self.fd = -1
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError(
                    f"{self.path} is being written by another process; "
                    "wait for it to finish or use another --out / --shard"
                ) from None
            raise
        self.repaired_bytes = self._repair()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock and close the file."""
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock
            self.fd = -1

    def _repair(self) -> int:
        with open(self.path, "rb") as handle:
            data = handle.read()
        good = _last_good_end(data)
        if good == len(data):
            return 0
        lines = data[:good].count(b"\n")
        log.warning(
            "%s: torn last line after line %d (%d bytes, from an interrupted write) removed; "
            "its question will be answered again",
            self.path,
            lines,
            len(data) - good,
        )
        os.ftruncate(self.fd, good)
        os.fsync(self.fd)
        return len(data) - good

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one JSON line and make it durable (flush + fsync)."""
        if self.fd < 0:
            raise ValueError(f"{self.path} is not open")
        _write_all(self.fd, _encode(record))
        os.fsync(self.fd)


@dataclass(frozen=True)
class AnswerLine:
    """One parsed line of an answer file, with where it came from."""

    path: Path
    line: int
    record: dict[str, Any]

    @property
    def question_id(self) -> str:
        """The question id (``id`` is accepted as an alias)."""
        return str(self.record["question_id"])


def _iter_lines(path: Path, tolerate_torn_tail: bool) -> Iterator[tuple[int, bytes]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    good = _last_good_end(data) if tolerate_torn_tail else len(data)
    if good < len(data):
        log.warning("%s: ignoring a torn last line (an interrupted write)", path)
    for number, raw in enumerate(data[:good].split(b"\n"), start=1):
        if raw.strip():
            yield number, raw


def _check_record(row: Any) -> str | None:
    """What is wrong with one parsed answer line, or None."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    if "question_id" not in row and "id" in row:
        row["question_id"] = row["id"]
    qid = row.get("question_id")
    if not isinstance(qid, str) or not qid:
        return "missing 'question_id' (or 'id') string"
    if not isinstance(row.get("text"), str):
        return f"{qid}: 'text' (the model's answer) must be a string"
    category = row.get("category")
    lrsvqa = row.get("benchmark", "lrsvqa") == "lrsvqa"  # MME categories are its own
    if lrsvqa and category is not None and category != "" and category not in CATEGORIES:
        return f"{qid}: unknown category {category!r}; valid: {', '.join(map(repr, CATEGORIES))}"
    for key in ("ground_truth", "size_bin", "source"):
        if row.get(key) is not None and not isinstance(row[key], str):
            return f"{qid}: {key!r} must be a string, got {row[key]!r}"
    return None


def read_answer_lines(
    path: str | Path, *, tolerate_torn_tail: bool = True, allow_duplicates: bool = False
) -> list[AnswerLine]:
    """Parse and validate an answer file.

    Malformed JSON, a missing id or answer, an unknown category or (unless
    ``allow_duplicates``) a repeated question id raise DataError listing the
    line numbers. A torn last line is skipped with a warning when
    ``tolerate_torn_tail`` (the file of a run that is still going or was killed).
    """
    path = Path(path)
    lines: list[AnswerLine] = []
    problems: list[str] = []
    first: dict[str, int] = {}
    for number, raw in _iter_lines(path, tolerate_torn_tail):
        try:
            row = json.loads(raw)
        except ValueError as exc:
            problems.append(f"line {number}: not valid JSON ({getattr(exc, 'msg', exc)})")
            continue
        problem = _check_record(row)
        if problem is not None:
            problems.append(f"line {number}: {problem}")
            continue
        qid = row["question_id"]
        previous = first.setdefault(qid, number)
        if previous != number and not allow_duplicates:
            problems.append(f"lines {previous} and {number}: duplicate question_id {qid!r}")
            continue
        lines.append(AnswerLine(path, number, row))
    if problems:
        shown = "; ".join(problems[:MAX_REPORTED_PROBLEMS])
        more = len(problems) - MAX_REPORTED_PROBLEMS
        suffix = f"; … and {more} more" if more > 0 else ""
        raise DataError(f"{path}: {len(problems)} bad answer line(s): {shown}{suffix}")
    return lines


def write_jsonl_atomic(path: Path, records: list[dict[str, Any]]) -> None:
    """Write ``records`` as JSON lines to ``path`` atomically (temp file + os.replace)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            for record in records:
                handle.write(_encode(record))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (temp file + os.replace)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
