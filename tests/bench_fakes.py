"""A fake answerer and a benchmark fixture built from the real LRS-VQA annotation file.

The fake is injected where the CLI builds its model, ``lrsvqa.cli.bench_cmd.make_answerer``:
in-process tests monkeypatch it; for a real subprocess (the SIGKILL test) run

    python -m tests.bench_fakes bench --model fake/slow ...

from the repository root: this module's ``__main__`` swaps ``make_answerer`` for
``fake_answerer`` and then runs the ordinary ``lrsvqa`` entry point. The library itself
carries no test-only branch.

Model ids understood by the fake: ``fake/<name>``; ``fake/slow`` sleeps 50 ms per answer.
``LRSVQA_FAKE_KILL`` makes the fake SIGKILL its own process at a chosen moment (for the
resume tests): ``loading`` (while the "model" loads), ``during:K`` (inside the answer after
K written ones), ``between:K`` (right after the K-th answer was written, before the next).
An empty stand-in image file makes ``ask`` raise ``RasterReadError`` (a damaged scene).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LRS_VQA = SHARED_DATA / "LRS_VQA_merged.jsonl"

WRONG = "zebra"  # the fake's wrong answer: no WordNet synset shared with any ground truth


def answers_right(question_id: str) -> bool:
    """Whether the fake answers this question correctly (two of three, by a stable hash)."""
    return zlib.crc32(question_id.encode()) % 3 != 0


@dataclass
class FakeAnswer:
    text: str
    evidence: dict[str, Any]
    cost: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "evidence": self.evidence, "cost": self.cost}


class FakeAnswerer:
    """Echoes the ground truth for two questions in three and ``WRONG`` otherwise; its
    finest-level evidence is one tile covering the left half of the question's hbox."""

    def __init__(self, options: Any) -> None:
        from lrsvqa.bench import load_lrsvqa

        self.kill = os.environ.get("LRSVQA_FAKE_KILL", "")
        if self.kill == "loading":
            _sigkill()
        self.asked = 0
        self.model_id = options.model
        self.revision: str | None = "fake-rev"
        self.delay = 0.05 if options.model.endswith("/slow") else 0.0
        self.options = options
        self.questions = {
            (str(q.image_path), q.text): q for q in load_lrsvqa(options.data, options.image_root)
        }

    def config_dict(self) -> dict[str, Any]:
        o = self.options
        return {
            "focus": {
                "selector": o.selector,
                "keep_ratio": o.keep_ratio,
                "max_tiles": o.max_tiles,
                "token_budget": o.budget,
            },
            "fake": True,
        }

    def ask(self, scene: str, question: str) -> FakeAnswer:
        from lrsvqa.errors import RasterReadError

        # ask is called only after the previous answer was written (flushed and fsynced).
        if self.kill == f"between:{self.asked}":
            _sigkill()
        self.asked += 1
        if self.delay:
            time.sleep(self.delay / 2)
        if self.kill == f"during:{self.asked - 1}":
            _sigkill()
        if self.delay:
            time.sleep(self.delay / 2)
        if Path(scene).stat().st_size == 0:
            raise RasterReadError(f"{scene}: empty file (damaged scene)")
        q = self.questions[(scene, question)]
        text = q.ground_truth if answers_right(q.question_id) else WRONG
        w, h = q.image_size
        tiles = []
        if q.hbox is not None:
            x1, y1, x2, y2 = q.hbox
            tiles.append(
                {
                    "row": 0,
                    "col": 0,
                    "box": [x1, y1, (x1 + x2) / 2, y2],
                    "score": 1.0,
                    "kept_tokens": 64,
                }
            )
        evidence = {
            "levels": [
                {
                    "level": 0,
                    "factor": 8,
                    "tiles": [
                        {"row": 0, "col": 0, "box": [0, 0, w, h], "score": 1.0, "kept_tokens": 36}
                    ],
                },
                {"level": 1, "factor": 4, "tiles": tiles},
            ],
            "finest_level": 1,
        }
        cost = {
            "vision_tokens_encoded": {"0": 576, "1": 256},
            "llm_vision_tokens": 300,
            "llm_prompt_tokens": 350,
            "tflops": 1.5,
            "seconds": {
                "read": 0.01,
                "encode": 0.02,
                "focus": 0.0,
                "generate": 0.03,
                "total": 0.06,
            },
            "peak_rss_mb": 100.0,
        }
        return FakeAnswer(text, evidence, cost)


class FakeMMEAnswerer(FakeAnswerer):
    """MME-RealWorld: the right letter for two questions in three, phrased in the ways
    models answer (``fake_mme_output``), else a wrong letter."""

    def __init__(self, options: Any) -> None:
        from lrsvqa.bench import load_mme_rs

        self.model_id = options.model
        self.revision = "fake-rev"
        self.delay = 0.05 if options.model.endswith("/slow") else 0.0
        self.options = options
        self.mme = {
            (str(q.image_path), q.prompt()): q
            for q in load_mme_rs(options.data, options.image_root)
        }

    def ask(self, scene: str, question: str) -> FakeAnswer:
        if self.delay:
            time.sleep(self.delay)
        q = self.mme[(scene, question)]
        cost = {"llm_vision_tokens": 300, "tflops": 1.5, "paper_tflops": 0.6}
        return FakeAnswer(fake_mme_output(q.question_id, q.ground_truth), {}, cost)


def fake_mme_output(question_id: str, truth: str) -> str:
    """The fake's MME answer: right (in one of three phrasings) or the next letter."""
    if not answers_right(question_id):
        return "ABCDEA"["ABCDE".index(truth) + 1]
    style = zlib.crc32(question_id.encode()) % 3
    return (truth, f"The answer is {truth}.", f"({truth})")[style]


def _sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fake_answerer(options: Any) -> FakeAnswerer:
    """Drop-in for ``lrsvqa.cli.bench_cmd.make_answerer``."""
    if not options.model.startswith("fake/"):
        raise ValueError(f"the fake answers only fake/<name> model ids, got {options.model!r}")
    if getattr(options, "benchmark", "lrsvqa") == "mme-rs":
        return FakeMMEAnswerer(options)
    return FakeAnswerer(options)


def real_rows() -> list[dict[str, Any]]:
    with LRS_VQA.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def subset_rows(n: int = 40, per_image: int = 3) -> list[dict[str, Any]]:
    """``n`` rows of the real file: for each (source, category), the questions (at most
    ``per_image``) of the first image that has one, so sources and categories mix."""
    rows = real_rows()
    by_image: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_image.setdefault(r["image"], []).append(r)
    first: dict[tuple[str, str], str] = {}
    for r in rows:
        first.setdefault((r["question_id"].split("_")[0], r["category"]), r["image"])
    chosen: list[dict[str, Any]] = []
    for image in [*dict.fromkeys(first[k] for k in sorted(first)), *by_image]:
        if len(chosen) >= n:
            break
        if any(c["image"] == image for c in chosen):
            continue
        chosen.extend(by_image[image][: min(per_image, n - len(chosen))])
    assert len(chosen) == n, len(chosen)
    return chosen


def write_standins(rows: list[dict[str, Any]], image_root: Path) -> list[Path]:
    """A tiny image at each row's recorded path (PNG or TIFF by suffix)."""
    from PIL import Image

    paths = []
    for image in dict.fromkeys(r["image"] for r in rows):
        path = image_root / image
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (40, 90, 160)).save(path)
        paths.append(path)
    return paths


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _main() -> int:
    from lrsvqa.cli import bench_cmd
    from lrsvqa.cli.main import main

    bench_cmd.make_answerer = fake_answerer  # type: ignore[assignment]
    return main()


if __name__ == "__main__":
    sys.exit(_main())
