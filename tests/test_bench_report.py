"""Run reports: numbers checked by hand, grounding coverage, files written, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lrsvqa.bench.answers import read_answer_lines
from lrsvqa.bench.grounding import coverage, grounding_table
from lrsvqa.bench.published import PUBLISHED
from lrsvqa.bench.report import build_report, cost_table, write_report
from lrsvqa.cli import bench_cmd
from lrsvqa.cli import main as cli_main
from lrsvqa.errors import DataError
from tests.bench_fakes import (
    LRS_VQA,
    fake_answerer,
    subset_rows,
    write_jsonl,
    write_standins,
)

BOX = [0, 0, 100, 100]


def row(qid: str, text: str, gt: str, category: str, **extra: Any) -> dict[str, Any]:
    return {"question_id": qid, "text": text, "ground_truth": gt, "category": category, **extra}


def hand_rows() -> list[dict[str, Any]]:
    """FAIR: count 1/2, object color 2/2 → OA 3/4, AA (0.5 + 1) / 2; STAR: reasoning 0/1."""
    cost = {
        "llm_vision_tokens": 100,
        "tflops": 2.0,
        "seconds": {"total": 1.0},
        "vision_tokens_encoded": {"0": 10, "1": 5},
    }
    return [
        row("FAIR_1", "2", "2", "count", size_bin=None, hbox=None, boxes=[], cost=cost),
        row("FAIR_2", "7", "3", "count", size_bin=None, cost={**cost, "tflops": 4.0}),
        row(
            "FAIR_3",
            "Red",
            "red",
            "object color",
            size_bin="32x32",
            hbox=BOX,
            boxes=[[0, 0, 50, 100]],
        ),
        row(
            "FAIR_4",
            "blue",
            "blue",
            "object color",
            size_bin="32x32",
            hbox=BOX,
            boxes=[[0, 0, 100, 60], [0, 40, 100, 100], [500, 500, 600, 600]],
        ),
        row("STAR_1", "zebra", "yes", "reasoning", size_bin="64x64", hbox=BOX, boxes=[]),
    ]


def test_coverage_of_the_ground_truth_box() -> None:
    assert coverage(BOX, [[0, 0, 50, 100]]) == 0.5
    assert coverage(BOX, [[0, 0, 50, 100], [0, 0, 50, 100]]) == 0.5  # union, not a sum
    assert coverage(BOX, [[0, 0, 100, 60], [0, 40, 100, 100]]) == 1.0
    assert coverage(BOX, [[-50, -50, 50, 50]]) == 0.25
    assert coverage(BOX, []) == 0.0
    assert coverage([5, 5, 5, 20], [[0, 0, 100, 100]]) is None  # no area: not scored
    table = {g.group: g for g in grounding_table(hand_rows())}
    assert table["32x32"].n == 2 and table["32x32"].mean_coverage == 0.75
    assert table["64x64"].mean_coverage == 0.0 and table["64x64"].hits == 0
    assert table["all"].n == 3 and table["all"].mean_coverage == pytest.approx(0.5)
    assert table["all"].hit_rate == pytest.approx(2 / 3)


def test_report_numbers_by_hand(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    write_jsonl(run / "answers.jsonl", hand_rows())
    report = build_report(run)
    fair = report.by_source.group("FAIR")
    accs = {c.category: c.accuracy for c in fair.categories}
    assert accs == {"count": 0.5, "object color": 1.0}  # "Red" == "red" after lower()
    assert fair.oa == 0.75 and fair.aa == 0.75
    assert report.by_source.group("STAR").aa == 0.0
    assert report.run_aa() == {"FAIR": 75.0, "STAR": 0.0}
    bins = {g.name: (g.correct, g.total) for g in report.by_size_bin.groups}
    assert bins == {"32x32": (2, 2), "64x64": (0, 1), "none": (1, 2)}
    assert report.costs["tflops"] == {"n": 2, "total": 6.0, "mean": 3.0, "max": 4.0}
    assert report.costs["vision_tokens_encoded.total"]["total"] == 30
    assert report.costs["seconds.total"]["mean"] == 1.0
    assert report.answered == 5 and report.expected is None
    md = report.to_markdown()
    assert "| count | 1 | 2 | 50.00% |" in md and "| **AA** | | | 75.00% |" in md
    assert "| **all** | 3 | 50.00% | 66.67% |" in md
    for p in PUBLISHED:
        assert " | ".join(f"{p.aa[s]:.2f}" for s in ("FAIR", "GLH-Bridge", "STAR")) in md
    assert "arXiv:2503.07588" in md


def test_cost_table_ignores_missing_and_non_numbers() -> None:
    table = cost_table([{"cost": {"tflops": 1.0, "note": "x", "ok": True}}, {"cost": None}, {}])
    assert table == {"tflops": {"n": 1, "total": 1.0, "mean": 1.0, "max": 1.0}}


def test_report_cli_writes_markdown_json_and_charts(tmp_path: Path, capsys, monkeypatch) -> None:
    from PIL import Image

    rows = subset_rows(12)
    write_standins(rows, tmp_path / "img")
    data = write_jsonl(tmp_path / "subset.jsonl", rows)
    monkeypatch.setattr(bench_cmd, "make_answerer", fake_answerer)
    run = tmp_path / "run"
    args = [
        "bench",
        "--data",
        str(data),
        "--image-root",
        str(tmp_path / "img"),
        "--model",
        "fake/echo",
        "--out",
        str(run),
    ]
    assert cli_main.main(args) == 0
    capsys.readouterr()
    assert cli_main.main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# LRS-VQA report") and "## Evidence grounding" in out
    assert "fake/echo" in out and "12 of 12 expected" in out
    sources = {r["question_id"].split("_")[0] for r in rows}
    for name in ["report.md", "report.json", *(f"accuracy_{s}.png" for s in sources)]:
        assert (run / name).is_file(), name
    for s in sources:
        with Image.open(run / f"accuracy_{s}.png") as im:
            im.verify()
            assert im.format == "PNG"
    js = json.loads((run / "report.json").read_text())
    assert js["answered"] == 12 and js["grounding"][-1]["group"] == "all"
    assert js["grounding"][-1]["mean_coverage"] == pytest.approx(0.5)  # the fake covers half
    assert js["config"]["answerer"]["fake"] is True
    elsewhere = tmp_path / "elsewhere"
    assert cli_main.main(["report", str(run), "--json", "--out", str(elsewhere)]) == 0
    assert json.loads(capsys.readouterr().out)["written"][0] == str(elsewhere / "report.md")
    assert (elsewhere / "report.md").is_file()


def test_foreign_answer_file_joined_with_the_annotation(tmp_path: Path) -> None:
    assert LRS_VQA.is_file(), f"missing {LRS_VQA}"
    rows = subset_rows(6)
    path = write_jsonl(
        tmp_path / "mine.jsonl", [{"id": r["question_id"], "text": r["ground_truth"]} for r in rows]
    )
    with pytest.raises(DataError, match="--data"):
        build_report(path)
    report = build_report(path, LRS_VQA)
    assert report.answered == 6 and all(g.oa == 1.0 for g in report.by_source.groups)
    assert report.grounding[-1].n == sum(1 for r in rows if r.get("hbox"))
    assert report.grounding[-1].mean_coverage in (0.0, None)  # no boxes recorded
    files = write_report(report, tmp_path / "out")
    assert [f.name for f in files[:2]] == ["report.md", "report.json"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json\n", "line 3: not valid JSON"),
        (
            json.dumps(row("FAIR_9", "x", "y", "colour")) + "\n",
            "line 3: FAIR_9: unknown category 'colour'",
        ),
        (
            json.dumps(row("FAIR_1", "x", "y", "count")) + "\n",
            "lines 1 and 3: duplicate question_id 'FAIR_1'",
        ),
        (json.dumps({"question_id": "FAIR_9"}) + "\n", "line 3: FAIR_9: 'text'"),
    ],
)
def test_bad_answer_files_exit_2_with_line_numbers(tmp_path, capsys, bad, message) -> None:
    good = hand_rows()
    path = tmp_path / "answers.jsonl"
    path.write_text(
        json.dumps(good[0]) + "\n" + json.dumps(good[2]) + "\n" + bad + json.dumps(good[3]) + "\n"
    )
    rc = cli_main.main(["report", str(path)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err


def test_duplicates_across_unmerged_shards_are_refused(tmp_path: Path, capsys) -> None:
    write_jsonl(tmp_path / "answers.shard-0-of-2.jsonl", hand_rows()[:2])
    write_jsonl(tmp_path / "answers.shard-1-of-2.jsonl", hand_rows()[1:3])
    assert cli_main.main(["report", str(tmp_path)]) == 2
    assert "run `lrsvqa bench merge` first" in capsys.readouterr().err


def test_torn_tail_is_ignored_by_readers_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in hand_rows()) + '{"question_id": "STAR_2", "te'
    path.write_text(text)
    assert len(read_answer_lines(path)) == 5
    assert build_report(tmp_path).answered == 5
    assert path.read_text() == text  # reports never modify answer files
    with pytest.raises(DataError, match="line 6: not valid JSON"):
        read_answer_lines(path, tolerate_torn_tail=False)


def test_missing_run_folder(tmp_path: Path, capsys) -> None:
    assert cli_main.main(["report", str(tmp_path / "nope")]) == 2
    assert "no such answer file or run folder" in capsys.readouterr().err
    assert cli_main.main(["report", str(tmp_path)]) == 2
    assert "no answers*.jsonl file" in capsys.readouterr().err
