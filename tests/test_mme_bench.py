"""MME-RealWorld-RS end to end: official prompt and letter extraction, runner, report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lrsvqa.bench.mme_report import build_mme_report
from lrsvqa.bench.mme_score import extract_choice, score_mme
from lrsvqa.cli import bench_cmd
from lrsvqa.cli import main as cli_main
from tests.bench_fakes import answers_right, fake_answerer, fake_mme_output

ROOT = Path(__file__).resolve().parents[1]
COLORS = [
    "(A) White",
    "(B) Red",
    "(C) Black",
    "(D) Green",
    "(E) This image doesn't feature the color.",
]
COUNTS = ["(A) 3", "(B) 5", "(C) 7", "(D) 9", "(E) The image does not feature the object."]
PLACES = ["(A) North", "(B) South", "(C) East", "(D) West", "(E) There is no ship."]


def mme_rows() -> list[dict[str, Any]]:
    """18 remote-sensing questions (6 per category over 6 images) and 2 of another subtask."""
    rows = []
    for i in range(18):
        category, choices = [("color", COLORS), ("count", COUNTS), ("position", PLACES)][i % 3]
        rows.append(
            {
                "Question_id": f"perception/remote_sensing/{category}/{i:04d}",
                "Image": f"remote_sensing/scene_{i % 6}.png",
                "Text": f"Question {i} about the {category}?",
                "Answer choices": choices,
                "Ground truth": "ABCDE"[i % 5],
                "Category": category,
                "Subtask": "Remote Sensing",
                "Task": "Perception",
            }
        )
    for i in range(2):
        rows.append({**rows[0], "Question_id": f"ad/{i}", "Subtask": "Autonomous_Driving"})
    return rows


@pytest.fixture
def mme(tmp_path: Path) -> tuple[Path, Path, list[dict[str, Any]]]:
    from PIL import Image

    rows = mme_rows()
    root = tmp_path / "images"
    for image in {r["Image"] for r in rows}:
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (40, 90, 160)).save(root / image)
    data = tmp_path / "MME_RealWorld.json"
    data.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return data, root, rows[:18]


@pytest.fixture(autouse=True)
def fake_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_cmd, "make_answerer", fake_answerer)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


def args_for(mme: tuple[Path, Path, Any], out: Path, *extra: str) -> list[str]:
    data, root, _ = mme
    return [
        "bench", "--benchmark", "mme-rs", "--data", str(data), "--image-root", str(root),
        "--model", "fake/echo", "--out", str(out), *extra,
    ]  # fmt: skip


def test_extract_choice_as_the_official_scorer() -> None:
    assert extract_choice("B", COLORS) == "B"
    assert extract_choice("The answer is C.", COLORS) == "C"
    assert extract_choice("  (D) Green", COLORS) == "D"
    assert extract_choice("red", COLORS) == "B"  # no letter: the choice containing it
    assert extract_choice("purple", COLORS) == ""
    assert extract_choice("", COLORS) == "A"  # "" is in every choice: the first one
    # more than 10 words and no capital A-E: no answer
    assert extract_choice("i think that it is most likely the one on the top left", COLORS) == ""
    # the first capital A-E anywhere wins, even inside a word ("Based")
    assert extract_choice("Based on the image, the roof is white", COLORS) == "B"
    # the reference's joined prefixes: "The best option is" alone is not removed
    assert extract_choice("The best option is C", COLORS) == "C"
    assert extract_choice("Best answer: D", COLORS) == "B"  # "Best" gives B, as there


def test_score_by_hand() -> None:
    recs = [
        {"text": "A", "ground_truth": "A", "choices": COLORS, "category": "color"},
        {"text": "The answer is E", "ground_truth": "B", "choices": COLORS, "category": "color"},
        {"text": "(C)", "ground_truth": "C", "choices": COUNTS, "category": "count"},
        {"text": "seven", "ground_truth": "C", "choices": COUNTS, "category": "count"},
        {"text": "", "ground_truth": "B", "choices": PLACES, "category": "Position/Attribute"},
    ]
    for r in recs:
        r |= {"task": "Perception", "subtask": "Remote Sensing"}
    report = score_mme(recs)
    cells = {c.category: (c.correct, c.total, c.e_picks) for c in report.cells}
    assert cells == {"color": (1, 2, 1), "count": (1, 2, 0), "position/attribute": (0, 1, 0)}
    assert report.accuracy() == 2 / 5 and report.accuracy("Perception", "Remote Sensing") == 0.4
    assert report.unanswered == 1  # "seven" matches no choice
    # MME-RealWorld's own result-file keys work too
    own = [{"Output": "A", "Ground truth": "A", "Answer choices": COLORS, "Category": "color"}]
    assert score_mme(own).accuracy() == 1.0


def test_bench_then_report(mme, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert cli_main.main(args_for(mme, out, "--json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "complete" and summary["total"] == 18  # other subtask dropped
    lines = [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]
    assert {r["benchmark"] for r in lines} == {"mme-rs"}
    first = next(r for r in lines if r["question_id"].endswith("/0000"))
    assert first["question"] == (
        "Question 0 about the color? The choices are listed below: \n\n" + "\n".join(COLORS)
        + "\nSelect the best answer to the above multiple-choice question based on the image."
        " Respond with only the letter (A, B, C, D, or E) of the correct option."
    )  # fmt: skip
    assert first["prediction"] == extract_choice(first["text"], COLORS)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["identity"]["benchmark"] == "mme-rs"

    assert cli_main.main(["report", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected: dict[str, list[int]] = {}
    for row in mme[2]:
        right = answers_right(row["Question_id"])
        assert (extract_choice(fake_mme_output(row["Question_id"], row["Ground truth"]), []) == row["Ground truth"]) == right  # fmt: skip
        expected.setdefault(row["Category"], [0, 0])
        expected[row["Category"]][0] += right
        expected[row["Category"]][1] += 1
    got = {c["category"]: [c["correct"], c["total"]] for c in data["accuracy"]["categories"]}
    assert got == expected
    total = sum(v[0] for v in expected.values())
    assert data["accuracy"]["overall"] == total / 18 and data["answered"] == 18
    md = (out / "report.md").read_text()
    assert "# MME-RealWorld-RS report" in md and "| Perception | Remote Sensing | color |" in md
    assert "paper_tflops — papers'" in md
    # the published Remote Sensing rows beside ours, with the question set named
    ours = f"**{100 * total / 18:.2f}%**"
    assert (
        f"18 of the split's 3,738 questions: not the published rows' question set) | | {ours} |"
        in md
    )
    assert "| LLaVA1.5-7B | Vicuna-7B | 22.12% |" in md and "| GPT-4o | - | 28.92% |" in md
    assert "arXiv:2408.13257" in md
    rows = {(p["method"], p["model"]): p["aa"]["Remote Sensing"] for p in data["published"]}
    assert len(rows) == 28 and rows[("LLaVA-Next", "Qwen-72B")] == 29.13


def test_mme_and_lrsvqa_settings_do_not_mix(mme, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert cli_main.main(args_for(mme, out, "--limit", "4")) == 0
    capsys.readouterr()
    plain = [a for a in args_for(mme, out, "--limit", "4") if a not in ("--benchmark", "mme-rs")]
    assert cli_main.main(plain) == 2  # same folder, other benchmark: refused
    assert "lrsvqa: error:" in capsys.readouterr().err
    assert cli_main.main(args_for(mme, tmp_path / "r2", "--size-bin", "32x32")) == 2
    assert "mme-rs has neither" in capsys.readouterr().err
    assert cli_main.main(args_for(mme, tmp_path / "r3", "--category", "count", "--json")) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 6


def test_sigkill_then_resume(mme, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [sys.executable, "-m", "tests.bench_fakes", *args_for(mme, out, "--json")]
    args[args.index("fake/echo")] = "fake/slow"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(var, None)
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    path = out / "answers.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= 5:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    assert 5 <= path.read_bytes().count(b"\n") < 18
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["status"] == "complete"
    ids = Counter(json.loads(x)["question_id"] for x in path.read_text().splitlines())
    assert len(ids) == 18 and set(ids.values()) == {1}
    report = build_mme_report(out)
    assert report.answered == 18 and report.expected == 18 and not report.missing
