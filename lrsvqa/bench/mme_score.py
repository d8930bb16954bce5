"""Score MME-RealWorld answers as its official script does (remote-sensing subset).

``extract_choice`` is MME-RealWorld's ``extract_characters_regex``, quirks included:
its prefix list joins two pairs of strings (missing commas in the original, so
``"The best option isThe correct option is"`` and ``"Best answer:Best option:"`` are
the prefixes removed); an answer of more than 10 words without a capital A-E counts
as no answer; otherwise the first capital A-E anywhere is the letter; with none, the
first choice that contains the (lowercased) answer gives its letter — an empty answer
is contained in every choice, so it picks the first. Accuracy is micro-averaged per
category (lowercased; ``x/attribute…`` folded into ``x/attribute``), per subtask, per
task and overall, as the official script prints them; ``E`` picks are counted.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lrsvqa.bench.records import percent
from lrsvqa.errors import DataError

#: MME-RealWorld's answer prefixes, exactly as its list evaluates in Python.
ANSWER_PREFIXES: tuple[str, ...] = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    # the reference omits two commas: these pairs are joined into one prefix each
    "The best option isThe correct option is",
    "Best answer:Best option:",
)

_LETTER = re.compile(r"[ABCDE]")


def extract_choice(text: str, choices: Sequence[str]) -> str:
    """The letter MME-RealWorld's scorer reads from a model's answer ("" for none)."""
    s = text.strip()
    for prefix in ANSWER_PREFIXES:
        s = s.replace(prefix, "")
    if len(s.split()) > 10 and not _LETTER.search(s):
        return ""
    match = _LETTER.search(s)
    if match is None:
        for choice in choices:
            if s.lower() in choice.lower():
                return choice[1]
        return ""
    return match[0]


def _category(raw: str) -> str:
    category = raw.lower()
    if "attribute" in category:
        category = category.split("/")[0] + "/attribute"
    return category


@dataclass(frozen=True)
class MMECell:
    """Correct / total (and E picks) of one task / subtask / category."""

    task: str
    subtask: str
    category: str
    correct: int
    total: int
    e_picks: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None


@dataclass(frozen=True)
class MMEReport:
    """Per-category, per-subtask, per-task and overall accuracy of MME-RealWorld answers."""

    cells: tuple[MMECell, ...]
    unanswered: int  # answers from which no letter could be read

    def _pool(self, cells: Iterable[MMECell]) -> tuple[int, int]:
        cells = list(cells)
        return sum(c.correct for c in cells), sum(c.total for c in cells)

    def accuracy(self, task: str | None = None, subtask: str | None = None) -> float | None:
        """Micro accuracy over the cells of ``task`` / ``subtask`` (None: all)."""
        correct, total = self._pool(
            c
            for c in self.cells
            if (task is None or c.task == task) and (subtask is None or c.subtask == subtask)
        )
        return correct / total if total else None

    @property
    def total(self) -> int:
        return sum(c.total for c in self.cells)

    @property
    def correct(self) -> int:
        return sum(c.correct for c in self.cells)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        tasks = sorted({c.task for c in self.cells})
        return {
            "benchmark": "mme-rs",
            "overall": self.accuracy(),
            "correct": self.correct,
            "total": self.total,
            "unanswered": self.unanswered,
            "tasks": {
                t: {
                    "accuracy": self.accuracy(t),
                    "subtasks": {
                        s: self.accuracy(t, s)
                        for s in sorted({c.subtask for c in self.cells if c.task == t})
                    },
                }
                for t in tasks
            },
            "categories": [
                {
                    "task": c.task,
                    "subtask": c.subtask,
                    "category": c.category,
                    "correct": c.correct,
                    "total": c.total,
                    "accuracy": c.accuracy,
                    "e_picks": c.e_picks,
                }
                for c in self.cells
            ],
        }

    def to_markdown(self) -> str:
        """Tables: category rows per task / subtask, then overall, as the official script."""
        out = [
            "| task | subtask | category | correct | total | accuracy | E picks |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for c in self.cells:
            out.append(
                f"| {c.task} | {c.subtask} | {c.category} | {c.correct} | {c.total} | "
                f"{percent(c.accuracy)} | {c.e_picks} |"
            )
        for task in sorted({c.task for c in self.cells}):
            for sub in sorted({c.subtask for c in self.cells if c.task == task}):
                out.append(
                    f"| **{task}** | **{sub}** | all | | | {percent(self.accuracy(task, sub))} | |"
                )
        out.append(
            f"| **overall** | | | {self.correct} | {self.total} | {percent(self.accuracy())} | |"
        )
        out.append("")
        out.append(
            f"Official MME-RealWorld scoring (answer letter extraction as its "
            f"`eval_your_results.py`); {self.unanswered} answer(s) gave no letter."
        )
        return "\n".join(out)


def score_mme(records: Iterable[Mapping[str, Any]]) -> MMEReport:
    """Score MME answer records: ``text`` (model output), ``ground_truth``, ``choices``,
    ``task``, ``subtask``, ``category`` (as ``answers.mme_answer_record`` writes them;
    MME-RealWorld's own ``Output``/``Ground truth``/``Answer choices`` keys also work)."""
    correct: dict[tuple[str, str, str], int] = defaultdict(int)
    total: dict[tuple[str, str, str], int] = defaultdict(int)
    e_picks: dict[tuple[str, str, str], int] = defaultdict(int)
    unanswered = 0
    for n, rec in enumerate(records, start=1):
        text = rec.get("text", rec.get("Output"))
        truth = rec.get("ground_truth", rec.get("Ground truth"))
        choices = rec.get("choices", rec.get("Answer choices"))
        if not isinstance(text, str) or not isinstance(truth, str) or not isinstance(choices, list):
            qid = rec.get("question_id", rec.get("Question_id", f"record {n}"))
            raise DataError(f"{qid}: an MME answer needs text, ground_truth and choices")
        key = (
            str(rec.get("task", rec.get("Task", ""))),
            str(rec.get("subtask", rec.get("Subtask", ""))),
            _category(str(rec.get("category", rec.get("Category", "")))),
        )
        letter = extract_choice(text, choices)
        unanswered += letter == ""
        total[key] += 1
        correct[key] += letter == truth
        e_picks[key] += letter == "E"
    cells = tuple(MMECell(*key, correct[key], total[key], e_picks[key]) for key in sorted(total))
    return MMEReport(cells, unanswered)
