"""Reports of a benchmark run: accuracy (official scorer), cost, evidence grounding.

``build_report`` reads a run folder (or one answer file) and computes every
table; ``write_report`` writes ``report.md``, ``report.json`` and one bar chart
per source (``accuracy_<source>.png``). Nothing here runs a model.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrsvqa.bench.answers import AnswerLine, read_answer_lines, write_json_atomic
from lrsvqa.bench.grounding import HIT_THRESHOLD, GroundingStats, grounding_table
from lrsvqa.bench.loader import load_lrsvqa
from lrsvqa.bench.manifest import merged_question_ids, run_manifests
from lrsvqa.bench.published import CITATION, PUBLISHED, PublishedResult
from lrsvqa.bench.records import NO_SIZE_BIN, SOURCES, Question, ScoreReport
from lrsvqa.bench.scorer import AnswerRow, SynonymMatcher, answer_files, score
from lrsvqa.errors import DataError

log = logging.getLogger(__name__)

#: Cost metrics shown in the Markdown table (report.json has every one).
COST_SHOWN = (
    "vision_tokens_encoded",
    "llm_vision_tokens",
    "llm_prompt_tokens",
    "new_tokens",
    "tflops",
    "paper_tflops",
    "seconds.",
    "peak_rss_mb",
)


#: How the two FLOPs conventions are labelled in report.md (pipeline/cost.py defines them).
COST_LABELS = {
    "tflops": "tflops — ours (2 per multiply-add, GQA; vision tower + focus + LLM)",
    "paper_tflops": "paper_tflops — papers' (multiply-adds once; focus + LLM, no vision tower)",
}


def run_answer_files(path: Path) -> list[Path]:
    """The answer files of a run (see ``scorer.answer_files``)."""
    return answer_files(path)


def _read_lines(files: Sequence[Path]) -> list[AnswerLine]:
    lines: list[AnswerLine] = []
    seen: dict[str, AnswerLine] = {}
    for file in files:
        for line in read_answer_lines(file, tolerate_torn_tail=True):
            first = seen.setdefault(line.question_id, line)
            if first is not line:
                raise DataError(
                    f"duplicate question_id {line.question_id!r} at {first.path}:{first.line} "
                    f"and {line.path}:{line.line}; run `lrsvqa bench merge` first"
                )
            lines.append(line)
    if not lines:
        raise DataError(f"no answers in {', '.join(str(f) for f in files)}")
    return lines


def _enrich(record: dict[str, Any], q: Question | None) -> dict[str, Any]:
    """Fill ground truth, category, size bin and hbox from the annotation."""
    if q is None:
        return record
    out = dict(record)
    for key, value in (
        ("ground_truth", q.ground_truth),
        ("category", q.category),
        ("size_bin", q.size_bin),
        ("hbox", None if q.hbox is None else list(q.hbox)),
    ):
        if out.get(key) is None:
            out[key] = value
    return out


def _score_row(line: AnswerLine, record: dict[str, Any]) -> AnswerRow:
    size_bin = record.get("size_bin")
    if size_bin is None:
        # recorded as null: no bin (count questions); absent: a foreign file without --data
        size_bin = NO_SIZE_BIN if "size_bin" in record else "unknown"
    return AnswerRow(
        line.question_id,
        record["text"],
        record.get("ground_truth"),
        record.get("category"),
        size_bin,
        str(line.path),
        line.line,
    )


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, Mapping):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
        if prefix == "vision_tokens_encoded":
            out["vision_tokens_encoded.total"] = sum(
                float(v) for v in value.values() if _is_number(v)
            )
    elif _is_number(value):
        out[prefix] = float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def cost_table(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per cost metric (flattened: ``seconds.total``, ``vision_tokens_encoded.0``…):
    ``n``, ``total``, ``mean`` and ``max`` over the answers that report it."""
    values: dict[str, list[float]] = defaultdict(list)
    for record in records:
        flat: dict[str, float] = {}
        _flatten("", record.get("cost") or {}, flat)
        for key, v in flat.items():
            values[key].append(v)
    return {
        key: {"n": len(vs), "total": sum(vs), "mean": sum(vs) / len(vs), "max": max(vs)}
        for key, vs in sorted(values.items())
    }


@dataclass(frozen=True)
class RunReport:
    """Every table of a run's report."""

    run_dir: Path
    files: tuple[str, ...]
    by_source: ScoreReport
    by_size_bin: ScoreReport
    grounding: tuple[GroundingStats, ...]
    costs: dict[str, dict[str, float]]
    answered: int
    expected: int | None = None
    missing: tuple[str, ...] = ()
    model: str | None = None
    config: dict[str, Any] | None = None
    published: tuple[PublishedResult, ...] = PUBLISHED
    answered_by_source: dict[str, int] = field(default_factory=dict)

    def run_aa(self) -> dict[str, float | None]:
        """This run's AA (%) per source."""
        out: dict[str, float | None] = {}
        for g in self.by_source.groups:
            out[g.name] = None if g.aa is None else 100 * g.aa
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (accuracies as fractions; published AA in percent)."""
        return {
            "run_dir": str(self.run_dir),
            "files": list(self.files),
            "model": self.model,
            "config": self.config,
            "answered": self.answered,
            "expected": self.expected,
            "missing": len(self.missing),
            "missing_ids": list(self.missing[:200]),
            "accuracy_by_source": self.by_source.to_dict(),
            "accuracy_by_size_bin": self.by_size_bin.to_dict(),
            "grounding": [g.to_dict() for g in self.grounding],
            "cost": self.costs,
            "published": {
                "citation": CITATION,
                "rows": [p.to_dict() for p in self.published],
                "this_run_aa_percent": self.run_aa(),
            },
        }

    def to_markdown(self) -> str:
        """The report as Markdown (what ``lrsvqa report`` prints)."""
        out = [f"# LRS-VQA report: {self.run_dir.name or self.run_dir}", ""]
        if self.model:
            out.append(f"- model: `{self.model}`")
        expected = f" of {self.expected} expected" if self.expected is not None else ""
        out.append(f"- answers: {self.answered}{expected} ({', '.join(self.files)})")
        if self.missing:
            out.append(f"- **{len(self.missing)} questions unanswered** (see report.json)")
        out += ["", "## Accuracy by source × category", "", self.by_source.to_markdown(), ""]
        out += ["## Accuracy by size bin (all sources)", "", *self._size_bin_table(), ""]
        out += ["## Compared with published results (AA %, per source)", ""]
        out += [*self._published_table(), ""]
        out += ["## Evidence grounding (hbox covered by the selected finest tiles)", ""]
        out += [*self._grounding_table(), ""]
        out += ["## Cost (per answer; the scene cache makes later questions cheaper)", ""]
        out += [*self._cost_table(), ""]
        return "\n".join(out)

    def _size_bin_table(self) -> list[str]:
        rows = ["| size bin | answers | OA | AA |", "|---|---:|---:|---:|"]
        for g in self.by_size_bin.groups:
            rows.append(f"| {g.name} | {g.total} | {_pct(g.oa)} | {_pct(g.aa)} |")
        return rows

    def _published_table(self) -> list[str]:
        sources = list(SOURCES)
        rows = ["| | " + " | ".join(sources) + " |", "|---|" + "---:|" * len(sources)]
        aa = self.run_aa()
        counts = ", ".join(f"{s} {self.answered_by_source.get(s, 0)}" for s in sources)
        cells = [_num(aa.get(s)) for s in sources]
        rows.append(
            f"| **this run** ({self.model or 'model ?'}; answers: {counts}) | "
            + " | ".join(cells)
            + " |"
        )
        for p in self.published:
            rows.append(f"| {p.label} | " + " | ".join(_num(p.aa.get(s)) for s in sources) + " |")
        rows += ["", f"Published: {CITATION}. Comparable only for a full, official-mode run."]
        return rows

    def _grounding_table(self) -> list[str]:
        rows = [
            f"| size bin | questions with hbox | mean coverage | hit rate (≥ {HIT_THRESHOLD:.0%}) |",
            "|---|---:|---:|---:|",
        ]
        for g in self.grounding:
            name = f"**{g.group}**" if g.group == "all" else g.group
            rows.append(f"| {name} | {g.n} | {_pct(g.mean_coverage)} | {_pct(g.hit_rate)} |")
        return rows

    def _cost_table(self) -> list[str]:
        shown = {k: v for k, v in self.costs.items() if k.startswith(COST_SHOWN)}
        if not shown:
            return ["No cost recorded."]
        rows = ["| metric | answers | total | mean | max |", "|---|---:|---:|---:|---:|"]
        for key, s in shown.items():
            rows.append(
                f"| {COST_LABELS.get(key, key)} | {int(s['n'])} | {_g(s['total'])} | {_g(s['mean'])} | {_g(s['max'])} |"
            )
        return rows


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _g(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.3f}"


def build_report(
    run: str | Path,
    data: str | Path | None = None,
    *,
    matcher: SynonymMatcher | None = None,
) -> RunReport:
    """Compute the report of a run folder (or one answer file).

    ``data`` (the annotation file) fills ground truths, categories, size bins
    and boxes that answer lines lack. Malformed lines, unknown categories and
    duplicate ids raise DataError with line numbers.
    """
    run_path = Path(run)
    files = run_answer_files(run_path)
    run_dir = run_path if run_path.is_dir() else run_path.parent
    lines = _read_lines(files)
    questions = {q.question_id: q for q in load_lrsvqa(data)} if data is not None else {}
    records = [_enrich(line.record, questions.get(line.question_id)) for line in lines]
    rows = [_score_row(line, rec) for line, rec in zip(lines, records, strict=True)]
    ann = questions or None
    names = [str(f) for f in files]
    by_source = score(rows, ann, by=("source",), matcher=matcher, files=names)
    by_size_bin = score(rows, ann, by=("size_bin",), matcher=matcher, files=names)

    manifests = run_manifests(run_dir) if run_path.is_dir() else []
    order = merged_question_ids(manifests)
    answered_ids = {line.question_id for line in lines}
    model = config = None
    for _, m in manifests:
        config = config or m.get("config")
        model = model or (m.get("model") or {}).get("id") or (m.get("identity") or {}).get("model")
    per_source: dict[str, int] = defaultdict(int)
    for row in rows:
        per_source[row.source] += 1
    return RunReport(
        run_dir=run_dir,
        files=tuple(names),
        by_source=by_source,
        by_size_bin=by_size_bin,
        grounding=tuple(grounding_table(records)),
        costs=cost_table(records),
        answered=len(lines),
        expected=len(order) if order else None,
        missing=tuple(q for q in order if q not in answered_ids),
        model=model,
        config=config,
        answered_by_source=dict(per_source),
    )


def write_charts(report: RunReport, out_dir: Path) -> list[Path]:
    """One bar chart per source (accuracy per category) as ``accuracy_<source>.png``."""
    # A bare Figure with its own Agg canvas: headless, and the process's pyplot backend
    # (a notebook's inline plots) is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paths: list[Path] = []
    for g in report.by_source.groups:
        names = [c.category for c in g.categories]
        accs = [100 * (c.accuracy or 0.0) for c in g.categories]
        fig = Figure(figsize=(8, 4.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.bar(range(len(names)), accs, color="#4477aa")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
        aa = "n/a" if g.aa is None else f"{100 * g.aa:.2f}%"
        ax.set_title(f"{g.name}: accuracy per category (AA {aa}, {g.total} answers)")
        fig.tight_layout()
        path = out_dir / f"accuracy_{g.name}.png"
        fig.savefig(path)
        paths.append(path)
    return paths


def write_report(report: RunReport, out_dir: str | Path | None = None) -> list[Path]:
    """Write ``report.md``, ``report.json`` and the charts; return their paths."""
    folder = Path(out_dir) if out_dir is not None else report.run_dir
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / "report.md"
    md.write_text(report.to_markdown(), encoding="utf-8")
    js = folder / "report.json"
    write_json_atomic(js, report.to_dict())
    return [md, js, *write_charts(report, folder)]
