"""Score LRS-VQA answer files with the official rules (or a labelled lenient mode).

Official mode reproduces the reference script exactly, per group (per source
by default): an answer counts when ``ground_truth.lower() == answer.lower()``
(no strip) or when any WordNet synset of the lowercased ground truth and any of
the lowercased answer have path similarity > 0.8 (``wn.synsets`` on the raw
strings: a multi-word string has no synsets, since WordNet joins words with
``_``). Rows with an empty ground truth or category are skipped. Per-category
accuracy; OA = correct / scored; AA = mean of the category accuracies.

Normalised mode (strip, lowercase, trailing punctuation removed, number words
as digits, then the same rules) is labelled everywhere and never official.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrsvqa.bench.loader import iter_jsonl, load_lrsvqa
from lrsvqa.bench.records import (
    NO_SIZE_BIN,
    SIZE_BINS,
    SOURCES,
    CategoryScore,
    GroupScore,
    Question,
    ScoreReport,
    source_of,
)
from lrsvqa.bench.synonyms import SynonymTable, load_table
from lrsvqa.bench.wordnet import describe, load_wordnet
from lrsvqa.errors import ConfigError, DataError
from lrsvqa.numbers import UNITS

log = logging.getLogger(__name__)

MODES = ("official", "normalised")
GROUP_KEYS = ("source", "category", "size_bin")


@dataclass(frozen=True)
class AnswerRow:
    """One model answer; ``None`` marks a field absent from the answer file."""

    question_id: str
    answer: str
    ground_truth: str | None = None
    category: str | None = None
    size_bin: str | None = None
    path: str = "<memory>"
    line: int = 0

    @property
    def source(self) -> str:
        """The source: question id up to the first ``_`` (as the reference)."""
        return source_of(self.question_id)

    @property
    def where(self) -> str:
        """``file:line`` of the row, for error messages."""
        return f"{self.path}:{self.line}"

    @classmethod
    def from_dict(cls, row: Any, path: str = "<memory>", line: int = 0) -> AnswerRow:
        """Build from a parsed answer-file row; ``id`` is accepted for ``question_id``."""
        where = f"{path}:{line}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        qid = row.get("question_id")
        alias = row.get("id")
        if qid is None:
            qid = alias
        elif alias is not None and alias != qid:
            raise DataError(f"{where}: question_id {qid!r} and id {alias!r} disagree")
        if not isinstance(qid, str) or not qid:
            raise DataError(f"{where}: missing 'question_id' (or 'id') string")
        answer = row.get("text")
        if not isinstance(answer, str):
            raise DataError(f"{where}: 'text' (the model's answer) must be a string")
        fields: dict[str, str | None] = {}
        for key in ("ground_truth", "category", "size_bin"):
            value = row.get(key)
            if value is not None and not isinstance(value, str):
                raise DataError(f"{where}: {key!r} must be a string, got {value!r}")
            fields[key] = value
        return cls(qid, answer, **fields, path=path, line=line)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {
            "question_id": self.question_id,
            "text": self.answer,
            "ground_truth": self.ground_truth,
            "category": self.category,
            "size_bin": self.size_bin,
            "path": self.path,
            "line": self.line,
        }


def answer_files(path: str | Path) -> list[Path]:
    """The answer files of ``path``: the file itself, or a run folder's ``answers.jsonl``
    (an unsharded or merged run), else its shard files ``answers*.jsonl``."""
    p = Path(path)
    if p.is_dir():
        merged = p / "answers.jsonl"
        if merged.is_file():
            return [merged]
        files = sorted(p.glob("answers*.jsonl"))
        if not files:
            raise DataError(f"{p}: no answers*.jsonl file in this folder")
        log.warning("%s: scoring unmerged shard files; `lrsvqa bench merge %s` joins them", p, p)
        return files
    if not p.is_file():
        raise DataError(f"{p}: no such answer file or run folder")
    return [p]


def read_answers(paths: str | Path | Iterable[str | Path]) -> list[AnswerRow]:
    """Read answer rows from files or run folders; duplicate ids raise DataError."""
    if isinstance(paths, str | Path):
        paths = [paths]
    rows: list[AnswerRow] = []
    for given in paths:
        for file in answer_files(given):
            rows.extend(AnswerRow.from_dict(r, str(file), n) for n, r in iter_jsonl(file))
    _check_duplicates(rows)
    return rows


def _check_duplicates(rows: Sequence[AnswerRow]) -> None:
    seen: dict[str, AnswerRow] = {}
    problems: list[str] = []
    for row in rows:
        first = seen.setdefault(row.question_id, row)
        if first is not row:
            problems.append(f"{row.question_id!r} at {first.where} and {row.where}")
    if problems:
        shown = "; ".join(problems[:10])
        more = f"; … and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DataError(f"duplicate question id(s) in answers: {shown}{more}")


class SynonymMatcher:
    """The reference's WordNet synonym test, memoised.

    ``path_similarity`` is ``1 / (d + 1)`` with ``d`` the shortest path length,
    and ``d == 0`` only for a synset compared with itself (NLTK compares synsets
    by name); any other pair gives at most 0.5. So "some pair > 0.8" holds
    exactly when the two words share a synset, which is what is tested here.
    ``wordnet`` is NLTK's reader or a ``SynonymTable`` (same answers, no NLTK).
    """

    def __init__(self, wordnet: Any) -> None:
        self.wordnet = wordnet
        self.synset_names = functools.lru_cache(maxsize=None)(self._synset_names)
        self.are_synonyms = functools.lru_cache(maxsize=None)(self._are_synonyms)

    def _synset_names(self, word: str) -> frozenset[Any]:
        if isinstance(self.wordnet, SynonymTable):
            return self.wordnet.synset_keys(word)
        return frozenset(s.name() for s in self.wordnet.synsets(word))

    def _are_synonyms(self, word1: str, word2: str) -> bool:
        return not self.synset_names(word1).isdisjoint(self.synset_names(word2))


_default_matcher: SynonymMatcher | None = None


def default_matcher() -> SynonymMatcher:
    """A matcher shared by all calls in this process: on the cached synonym table
    (``bench.synonyms``), or on NLTK's reader if the table cannot stand in for it."""
    global _default_matcher
    if _default_matcher is None:
        table = load_table()
        _default_matcher = SynonymMatcher(table if table is not None else load_wordnet())
    return _default_matcher


_UNITS = list(UNITS)
_NUMBERS = {w: str(i) for i, w in enumerate(_UNITS)}
_TENS_WORDS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_TENS = {w: 10 * i for i, w in enumerate(_TENS_WORDS, start=2)}
_NUMBER_WORD = re.compile(
    r"\b(?:(" + "|".join(_TENS) + r")(?:[\s-](" + "|".join(list(_NUMBERS)[1:10]) + r"))?"
    r"|(" + "|".join(_NUMBERS) + r"))\b"
)
_TRAILING = re.compile(r"[\s.,;:!?。]+$")


def normalise(text: str) -> str:
    """Lenient form used by ``mode="normalised"``: strip, lowercase, drop
    trailing punctuation, write number words as digits (``"Three."`` -> ``"3"``)."""
    text = _TRAILING.sub("", text.strip().lower())

    def digits(m: re.Match[str]) -> str:
        if m.group(3):
            return _NUMBERS[m.group(3)]
        return str(_TENS[m.group(1)] + int(_NUMBERS.get(m.group(2) or "zero", "0")))

    return _NUMBER_WORD.sub(digits, text)


def _parse_by(by: str | Iterable[str]) -> tuple[str, ...]:
    keys = [k.strip() for k in by.split(",")] if isinstance(by, str) else list(by)
    keys = [k for k in keys if k]
    unknown = [k for k in keys if k not in GROUP_KEYS]
    if unknown:
        raise ConfigError(f"unknown grouping {', '.join(unknown)}; valid: {', '.join(GROUP_KEYS)}")
    return tuple(dict.fromkeys(keys))


def _join(
    rows: Sequence[AnswerRow],
    annotations: Mapping[str, Question] | None,
    need_size_bin: bool,
) -> list[AnswerRow]:
    """Fill absent ground truth / category / size bin from the annotations."""
    joined: list[AnswerRow] = []
    for row in rows:
        needs = row.ground_truth is None or row.category is None
        needs = needs or (need_size_bin and row.size_bin is None)
        if not needs:
            joined.append(row)
            continue
        if annotations is None:
            lacking = [
                k
                for k, v in (("ground_truth", row.ground_truth), ("category", row.category))
                if v is None
            ] or ["size_bin"]
            raise DataError(
                f"{row.where}: answer has no {'/'.join(lacking)}; "
                "pass the annotation file with --data LRS_VQA_merged.jsonl"
            )
        q = annotations.get(row.question_id)
        if q is None:
            raise DataError(
                f"{row.where}: question id {row.question_id!r} is not in the annotation file"
            )
        joined.append(
            AnswerRow(
                row.question_id,
                row.answer,
                q.ground_truth if row.ground_truth is None else row.ground_truth,
                q.category if row.category is None else row.category,
                (q.size_bin or NO_SIZE_BIN) if row.size_bin is None else row.size_bin,
                row.path,
                row.line,
            )
        )
    return joined


def _sort_value(key: str, value: str) -> tuple[int, str]:
    order = {"source": SOURCES, "size_bin": (*SIZE_BINS, NO_SIZE_BIN)}.get(key, ())
    return (order.index(value), "") if value in order else (len(order), value)


def score(
    answer_rows: Iterable[AnswerRow | Mapping[str, Any]],
    annotations: Iterable[Question] | Mapping[str, Question] | None = None,
    *,
    by: str | Iterable[str] = ("source",),
    mode: str = "official",
    matcher: SynonymMatcher | None = None,
    files: Sequence[str] = (),
) -> ScoreReport:
    """Score answers; one table per group, categories as rows, then OA and AA.

    ``answer_rows`` are AnswerRow objects or answer-file dicts. ``annotations``
    (questions from ``load_lrsvqa``) fill ground truths, categories and size
    bins that rows lack; without them such rows raise DataError. ``by`` names
    the table keys among ``source``, ``size_bin`` (``category`` is accepted and
    means nothing more: categories are always the rows); no key pools all rows.
    ``mode`` is ``"official"`` (reference rules) or ``"normalised"``.
    ``matcher`` defaults to a shared one (``default_matcher``).
    """
    if mode not in MODES:
        raise ConfigError(f"unknown scoring mode {mode!r}; valid: {', '.join(MODES)}")
    keys = _parse_by(by)
    table_keys = tuple(k for k in keys if k != "category")
    rows = [
        r if isinstance(r, AnswerRow) else AnswerRow.from_dict(r, line=i)
        for i, r in enumerate(answer_rows, start=1)
    ]
    _check_duplicates(rows)
    ann: Mapping[str, Question] | None
    if annotations is None or isinstance(annotations, Mapping):
        ann = annotations
    else:
        ann = {q.question_id: q for q in annotations}
    rows = _join(rows, ann, "size_bin" in table_keys)
    if matcher is None:
        matcher = default_matcher()
    official = mode == "official"

    correct: dict[tuple[str, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    total: dict[tuple[str, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    synonyms: dict[tuple[str, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    skipped: dict[tuple[str, ...], int] = defaultdict(int)
    n_skipped = 0
    for row in rows:
        values = {"source": row.source, "size_bin": row.size_bin or NO_SIZE_BIN}
        group = tuple(values[k] for k in table_keys)
        gt, answer, category = row.ground_truth or "", row.answer, row.category or ""
        if official:
            gt, answer = gt.lower(), answer.lower()
        else:
            gt, answer = normalise(gt), normalise(answer)
        counts = total[group]  # a group whose rows are all skipped still gets a table
        if category:
            counts.setdefault(category, 0)  # listed as n/a when all its rows are skipped
        if not gt or not category:
            skipped[group] += 1
            n_skipped += 1
            continue
        total[group][category] += 1
        if gt == answer:
            correct[group][category] += 1
        elif matcher.are_synonyms(gt, answer):
            correct[group][category] += 1
            synonyms[group][category] += 1

    groups = []
    for group in sorted(
        total, key=lambda g: [_sort_value(k, v) for k, v in zip(table_keys, g, strict=True)]
    ):
        cats = tuple(
            CategoryScore(c, correct[group][c], total[group][c], synonyms[group][c])
            for c in sorted(total[group])
        )
        groups.append(GroupScore(tuple(zip(table_keys, group, strict=True)), cats, skipped[group]))
    report = ScoreReport(
        mode=mode,
        by=keys,
        groups=tuple(groups),
        n_answers=len(rows),
        n_skipped=n_skipped,
        wordnet=(
            matcher.wordnet.describe()
            if isinstance(matcher.wordnet, SynonymTable)
            else describe(matcher.wordnet)
        ),
        files=tuple(files),
    )
    log.info("scored %d answers (%d skipped), mode %s", len(rows), n_skipped, mode)
    return report


def score_files(
    paths: str | Path | Iterable[str | Path],
    data: str | Path | None = None,
    *,
    by: str | Iterable[str] = ("source",),
    mode: str = "official",
    matcher: SynonymMatcher | None = None,
) -> ScoreReport:
    """Read answer files (or run folders) and ``score`` them, joining ``data`` if given."""
    path_list = [paths] if isinstance(paths, str | Path) else list(paths)
    rows = read_answers(path_list)
    files = [str(f) for p in path_list for f in answer_files(p)]
    annotations = None if data is None else load_lrsvqa(data)
    return score(rows, annotations, by=by, mode=mode, matcher=matcher, files=files)
