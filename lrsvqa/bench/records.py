"""Typed records of the benchmarks: questions in, scores out.

Everything here is a frozen dataclass with ``to_dict()``; nothing reads files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The three sources of LRS-VQA; a question id starts with one of them and ``_``.
SOURCES: tuple[str, ...] = ("FAIR", "GLH-Bridge", "STAR")

#: The eight LRS-VQA question categories, spelled as in the annotation file.
CATEGORIES: tuple[str, ...] = (
    "count",
    "object background",
    "object category",
    "object color",
    "object shape",
    "object status",
    "reasoning",
    "rural or urban",
)

#: Size bins of the target object, smallest first (``count`` questions have none).
SIZE_BINS: tuple[str, ...] = (
    "32x32",
    "64x64",
    "128x128",
    "256x256",
    "512x512",
    "1024x1024",
    ">1024x1024",
)

#: Label used in score tables for a row without a size bin.
NO_SIZE_BIN = "none"


def source_of(question_id: str) -> str:
    """The source of a question id: the part before the first ``_``."""
    return question_id.split("_", 1)[0]


@dataclass(frozen=True)
class Question:
    """One LRS-VQA question, as read from the annotation file."""

    question_id: str
    source: str
    image: str
    image_path: Path | None
    category: str
    text: str
    ground_truth: str
    image_size: tuple[int, int]
    hbox: tuple[float, float, float, float] | None = None
    rbox: tuple[float, ...] | None = None
    abs_size: str | None = None
    size_bin: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (paths as strings, tuples as lists)."""
        return {
            "question_id": self.question_id,
            "source": self.source,
            "image": self.image,
            "image_path": None if self.image_path is None else str(self.image_path),
            "category": self.category,
            "text": self.text,
            "ground_truth": self.ground_truth,
            "image_size": list(self.image_size),
            "hbox": None if self.hbox is None else list(self.hbox),
            "rbox": None if self.rbox is None else list(self.rbox),
            "abs_size": self.abs_size,
            "size_bin": self.size_bin,
        }


@dataclass(frozen=True)
class MMEQuestion:
    """One MME-RealWorld multiple-choice question."""

    question_id: str
    image: str
    image_path: Path | None
    text: str
    choices: tuple[str, ...]
    ground_truth: str
    category: str
    subtask: str
    task: str

    def prompt(self) -> str:
        """Question, choices and answer instruction, laid out as the reference does."""
        choices = "\n".join(self.choices)
        return (
            f"{self.text} The choices are listed below: \n\n{choices}".strip()
            + "\nSelect the best answer to the above multiple-choice question based on the"
            " image. Respond with only the letter (A, B, C, D, or E) of the correct option."
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {
            "question_id": self.question_id,
            "image": self.image,
            "image_path": None if self.image_path is None else str(self.image_path),
            "text": self.text,
            "choices": list(self.choices),
            "ground_truth": self.ground_truth,
            "category": self.category,
            "subtask": self.subtask,
            "task": self.task,
        }


def question_text(q: Question | MMEQuestion) -> str:
    """What the model is asked: LRS-VQA's text, or MME's official multiple-choice prompt."""
    return q.prompt() if isinstance(q, MMEQuestion) else q.text


@dataclass(frozen=True)
class CategoryScore:
    """Correct and scored counts of one category within one group."""

    category: str
    correct: int
    total: int
    synonym_matches: int = 0

    @property
    def accuracy(self) -> float | None:
        """``correct / total``, or None when nothing was scored."""
        return self.correct / self.total if self.total else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {
            "category": self.category,
            "correct": self.correct,
            "total": self.total,
            "accuracy": self.accuracy,
            "synonym_matches": self.synonym_matches,
        }


@dataclass(frozen=True)
class GroupScore:
    """Per-category scores of one group (a source, by default) with OA and AA."""

    key: tuple[tuple[str, str], ...]
    categories: tuple[CategoryScore, ...]
    skipped: int = 0

    @property
    def name(self) -> str:
        """Human label of the group, e.g. ``FAIR`` or ``STAR / 64x64``."""
        return " / ".join(value for _, value in self.key) or "all"

    @property
    def correct(self) -> int:
        """Correct answers over all categories."""
        return sum(c.correct for c in self.categories)

    @property
    def total(self) -> int:
        """Scored answers over all categories (skipped rows excluded)."""
        return sum(c.total for c in self.categories)

    @property
    def oa(self) -> float | None:
        """Overall accuracy: correct / scored, or None when nothing was scored."""
        return self.correct / self.total if self.total else None

    @property
    def aa(self) -> float | None:
        """Average accuracy: mean of the accuracies of categories with scored items."""
        accs = [c.accuracy for c in self.categories if c.accuracy is not None]
        return sum(accs) / len(accs) if accs else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {
            "group": dict(self.key),
            "name": self.name,
            "categories": [c.to_dict() for c in self.categories],
            "correct": self.correct,
            "total": self.total,
            "skipped": self.skipped,
            "oa": self.oa,
            "aa": self.aa,
        }


def percent(value: float | None) -> str:
    """A fraction as ``12.34%`` (``n/a`` for None)."""
    return "n/a" if value is None else f"{value * 100:.2f}%"


@dataclass(frozen=True)
class ScoreReport:
    """Result of scoring answer files: one ``GroupScore`` per group.

    ``mode`` is ``"official"`` (the reference rules, comparable to published
    numbers) or ``"normalised"`` (lenient matching, never to be reported as official).
    """

    mode: str
    by: tuple[str, ...]
    groups: tuple[GroupScore, ...]
    n_answers: int
    n_skipped: int
    wordnet: str = ""
    files: tuple[str, ...] = field(default_factory=tuple)

    @property
    def official(self) -> bool:
        """Whether the numbers follow the reference rules exactly."""
        return self.mode == "official"

    @property
    def title(self) -> str:
        """Mode label used above every table."""
        if self.official:
            return "official scoring (reference rules)"
        return "NORMALISED scoring (lenient; not comparable to published numbers)"

    def group(self, *values: str) -> GroupScore:
        """The group whose key values are ``values``, e.g. ``report.group("FAIR")``."""
        for g in self.groups:
            if tuple(v for _, v in g.key) == values:
                return g
        raise KeyError(values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (accuracies as fractions in [0, 1])."""
        return {
            "mode": self.mode,
            "official": self.official,
            "by": list(self.by),
            "n_answers": self.n_answers,
            "n_skipped": self.n_skipped,
            "wordnet": self.wordnet,
            "files": list(self.files),
            "groups": [g.to_dict() for g in self.groups],
        }

    def to_text(self) -> str:
        """Plain-text tables, one per group, categories as rows, then OA and AA."""
        out: list[str] = []
        for g in self.groups:
            width = max([len("category"), *(len(c.category) for c in g.categories)])
            out.append(f"== {g.name} — {self.title}")
            out.append(f"{'category':<{width}}  {'correct':>7}  {'total':>6}  {'accuracy':>8}")
            for c in g.categories:
                acc = percent(c.accuracy)
                out.append(f"{c.category:<{width}}  {c.correct:>7}  {c.total:>6}  {acc:>8}")
            out.append(f"{'OA':<{width}}  {g.correct:>7}  {g.total:>6}  {percent(g.oa):>8}")
            out.append(f"{'AA':<{width}}  {'':>7}  {'':>6}  {percent(g.aa):>8}")
            if g.skipped:
                out.append(f"({g.skipped} skipped: empty ground truth or category)")
            out.append("")
        out.append(self._summary())
        return "\n".join(out)

    def to_markdown(self) -> str:
        """Markdown tables, one per group, categories as rows, then OA and AA."""
        out: list[str] = []
        for g in self.groups:
            out.append(f"### {g.name} — {self.title}\n")
            out.append("| category | correct | total | accuracy |")
            out.append("|---|---:|---:|---:|")
            for c in g.categories:
                out.append(f"| {c.category} | {c.correct} | {c.total} | {percent(c.accuracy)} |")
            out.append(f"| **OA** | {g.correct} | {g.total} | {percent(g.oa)} |")
            out.append(f"| **AA** | | | {percent(g.aa)} |")
            if g.skipped:
                out.append(f"\n{g.skipped} skipped (empty ground truth or category).")
            out.append("")
        out.append(self._summary())
        return "\n".join(out)

    def _summary(self) -> str:
        parts = [f"{g.name} {percent(g.aa)}" for g in self.groups]
        label = "AA" if self.official else "AA (normalised)"
        return f"{label}: " + " | ".join(parts) + f"  [{self.n_answers} answers]"
