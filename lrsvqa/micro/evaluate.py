"""Held-out evaluation of a micro model through the real ``Pipeline`` (no shortcut).

Worlds come from seeds never used in training (``HELD_OUT_SEED`` and up); each scene is
written as a GeoTIFF and asked about with ``Pipeline.ask``, exactly as a user would.
"""

from __future__ import annotations

import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

HELD_OUT_SEED = 10_000_000  # training worlds use seeds 0 .. a few tens of thousands


def normalise(text: str) -> str:
    return text.strip().strip(".").lower()


def evaluate_single_tile(
    model: str | Any,
    *,
    n_questions: int = 400,
    seed: int = HELD_OUT_SEED,
    size: int = 224,
    selector: str = "rfm",
    categories: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Accuracy per category on one-tile scenes, with each category's majority baseline;
    ``categories`` asks only the questions of those categories (``n_questions`` of them),
    e.g. enough count questions to compare two runs' counting."""
    from lrsvqa.focus import FocusConfig
    from lrsvqa.models import from_pretrained
    from lrsvqa.pipeline import Pipeline
    from lrsvqa.testing.world import make_world, write_world
    from lrsvqa.testing.world_questions import world_questions

    adapter = from_pretrained(model, device="cpu") if isinstance(model, str) else model
    pipeline = Pipeline(adapter, focus=FocusConfig(selector=selector), max_new_tokens=6)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lrsvqa-eval-") as tmp:
        w = 0
        while len(rows) < n_questions:
            world = make_world(size, seed=seed + w)
            path = write_world(Path(tmp) / f"held_{w}.tif", world)
            for q in world_questions(world, seed=seed + w):
                if categories is not None and q.category not in categories:
                    continue
                answer = pipeline.ask(path, q.text)
                rows.append(
                    {
                        "category": q.category,
                        "truth": q.answer,
                        "answer": answer.text,
                        "correct": normalise(answer.text) == q.answer,
                    }
                )
            pipeline.sessions.clear()
            w += 1
    return summarise(rows[:n_questions])


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-category accuracy and majority-class baseline; count split 0-5 as well."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[r["category"]].append(r)
        if r["category"] == "count" and r["truth"].isdigit() and int(r["truth"]) <= 5:
            by["count 0-5"].append(r)
    out: dict[str, Any] = {"questions": len(rows), "categories": {}}
    for cat, items in sorted(by.items()):
        truths = Counter(r["truth"] for r in items)
        majority, n_major = truths.most_common(1)[0]
        out["categories"][cat] = {
            "n": len(items),
            "accuracy": round(100 * sum(r["correct"] for r in items) / len(items), 1),
            "majority_answer": majority,
            "majority_baseline": round(100 * n_major / len(items), 1),
        }
    out["overall"] = round(100 * sum(r["correct"] for r in rows) / max(1, len(rows)), 1)
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m lrsvqa.micro.evaluate RUN_DIR``: redo a training run's held-out evaluation
    (``RUN_DIR/eval.json``), e.g. when the run stopped before its own."""
    import argparse
    import json
    import os

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument(
        "--categories",
        default=None,
        help="Ask only these categories, comma-separated (e.g. 'count,presence'); the report "
        "goes to RUN_DIR/eval-<categories>.json and eval.json is left as it is.",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lrsvqa.testing.world_questions import CATEGORIES

    cats = None
    if args.categories:
        cats = tuple(c.strip() for c in args.categories.split(",") if c.strip())
        unknown = [c for c in cats if c not in CATEGORIES]
        if unknown:
            parser.error(f"unknown categories {unknown}; choose from {', '.join(CATEGORIES)}")
    if not (args.run / "model" / "config.json").is_file():
        if (args.run.parent / "settings.json").is_file():
            hint = f"give its run folder, {args.run.parent}"
        elif (args.run / "config.json").is_file():
            hint = "a model outside a run: call lrsvqa.micro.evaluate.evaluate_single_tile on it"
        else:
            hint = "give the folder that `python -m lrsvqa.micro.train --out` wrote"
        parser.error(f"{args.run}: not a training run (no model/config.json); {hint}")
    report = evaluate_single_tile(
        str(args.run / "model"), n_questions=args.questions, categories=cats
    )
    name = "eval.json" if cats is None else "eval-" + "-".join(cats).replace(" ", "_") + ".json"
    (args.run / name).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({"overall": report["overall"], "categories": report["categories"]}, indent=1))


if __name__ == "__main__":
    main()
