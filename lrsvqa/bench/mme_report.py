"""Reports of an MME-RealWorld-RS run: official accuracy per category / subtask / task, cost."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrsvqa.bench.answers import read_answer_lines, write_json_atomic
from lrsvqa.bench.manifest import merged_question_ids, run_manifests
from lrsvqa.bench.mme_score import MMEReport, score_mme
from lrsvqa.bench.published import MME_CITATION, MME_PUBLISHED, MME_RS_QUESTIONS
from lrsvqa.bench.records import percent
from lrsvqa.bench.report import COST_LABELS, COST_SHOWN, cost_table, run_answer_files
from lrsvqa.errors import DataError


def is_mme_run(run: str | Path) -> bool:
    """Whether ``run`` (a run folder or answer file) holds MME-RealWorld answers."""
    for file in run_answer_files(Path(run)):
        for line in read_answer_lines(file, tolerate_torn_tail=True):
            return line.record.get("benchmark") == "mme-rs"
    return False


@dataclass(frozen=True)
class MMERunReport:
    """Every table of an MME-RealWorld-RS run's report."""

    run_dir: Path
    files: tuple[str, ...]
    scores: MMEReport
    costs: dict[str, dict[str, float]]
    answered: int
    expected: int | None
    missing: tuple[str, ...]
    model: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (accuracies as fractions)."""
        return {
            "benchmark": "mme-rs",
            "run_dir": str(self.run_dir),
            "files": list(self.files),
            "model": self.model,
            "answered": self.answered,
            "expected": self.expected,
            "missing": len(self.missing),
            "missing_ids": list(self.missing[:200]),
            "accuracy": self.scores.to_dict(),
            "cost": self.costs,
            "published": [p.to_dict() for p in MME_PUBLISHED],
        }

    def _published_markdown(self) -> list[str]:
        """Our Remote Sensing accuracy in a table beside every published row."""
        ours = self.scores.accuracy(subtask="Remote Sensing")
        questions = sum(c.total for c in self.scores.cells if c.subtask == "Remote Sensing")
        if questions == MME_RS_QUESTIONS:
            scope = f"all {MME_RS_QUESTIONS:,} Remote Sensing questions, as the published rows"
        else:
            scope = (
                f"{questions:,} of the split's {MME_RS_QUESTIONS:,} questions: not the "
                "published rows' question set"
            )
        out = [
            "MME-RealWorld's perception accuracy on its Remote Sensing split (the paper gives "
            "the split's overall accuracy, not one per category).",
            "",
            "| method | LLM | Remote Sensing |",
            "|---|---|---:|",
            f"| **this run** (`{self.model or '?'}`; {scope}) | | **{percent(ours)}** |",
        ]
        for p in sorted(MME_PUBLISHED, key=lambda p: -p.aa["Remote Sensing"]):
            out.append(f"| {p.method} | {p.model} | {p.aa['Remote Sensing']:.2f}% |")
        return [*out, "", f"Source: {MME_CITATION}."]

    def to_markdown(self) -> str:
        """The report as Markdown (what ``lrsvqa report`` prints)."""
        out = [f"# MME-RealWorld-RS report: {self.run_dir.name or self.run_dir}", ""]
        if self.model:
            out.append(f"- model: `{self.model}`")
        expected = f" of {self.expected}" if self.expected else ""
        out.append(f"- answers: {self.answered}{expected}")
        if self.missing:
            out.append(f"- **{len(self.missing)} questions unanswered** (see report.json)")
        out += ["", "## Accuracy (official MME-RealWorld scoring)", "", self.scores.to_markdown()]
        out += ["", "## Compared with published results", "", *self._published_markdown()]
        out += ["", "## Cost (per answer)", ""]
        shown = {k: v for k, v in self.costs.items() if k.startswith(COST_SHOWN)}
        if not shown:
            out.append("No cost recorded.")
        else:
            out += ["| metric | answers | total | mean | max |", "|---|---:|---:|---:|---:|"]
            for key, s in shown.items():
                out.append(
                    f"| {COST_LABELS.get(key, key)} | {int(s['n'])} | {s['total']:,.3f} | "
                    f"{s['mean']:,.3f} | {s['max']:,.3f} |"
                )
        return "\n".join(out) + "\n"


def build_mme_report(run: str | Path) -> MMERunReport:
    """Compute the report of an MME-RealWorld-RS run folder (or one answer file)."""
    run_path = Path(run)
    files = run_answer_files(run_path)
    run_dir = run_path if run_path.is_dir() else run_path.parent
    seen: set[str] = set()
    records = []
    for file in files:
        for line in read_answer_lines(file, tolerate_torn_tail=True):
            if line.question_id in seen:
                raise DataError(
                    f"duplicate question_id {line.question_id!r} at {line.path}:{line.line}; "
                    "run `lrsvqa bench merge` first"
                )
            seen.add(line.question_id)
            records.append(line.record)
    if not records:
        raise DataError(f"no answers in {', '.join(str(f) for f in files)}")
    manifests = run_manifests(run_dir) if run_path.is_dir() else []
    order = merged_question_ids(manifests)
    model = None
    for _, m in manifests:
        model = model or (m.get("model") or {}).get("id") or (m.get("identity") or {}).get("model")
    return MMERunReport(
        run_dir=run_dir,
        files=tuple(str(f) for f in files),
        scores=score_mme(records),
        costs=cost_table(records),
        answered=len(records),
        expected=len(order) if order else None,
        missing=tuple(q for q in order if q not in seen),
        model=model,
    )


def write_mme_report(report: MMERunReport, out_dir: str | Path | None = None) -> list[Path]:
    """Write ``report.md`` and ``report.json``; return their paths."""
    folder = Path(out_dir) if out_dir is not None else report.run_dir
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / "report.md"
    md.write_text(report.to_markdown(), encoding="utf-8")
    js = folder / "report.json"
    write_json_atomic(js, report.to_dict())
    return [md, js]
