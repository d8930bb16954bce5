"""Synthetic LRS-VQA-format question sets over generated ship scenes."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from lrsvqa.errors import ConfigError

_QUADRANTS = {
    "upper left": (0, 0),
    "upper right": (0, 1),
    "lower left": (1, 0),
    "lower right": (1, 1),
}


def write_synthetic(
    folder: str | os.PathLike[str],
    n_questions: int,
    *,
    seed: int = 0,
    sizes: tuple[int, int] = (1000, 2000),
    per_scene: int = 5,
) -> Path:
    """Write ship scenes and ``questions.jsonl`` (LRS-VQA format) with templated questions.

    Reused as is when ``folder`` already holds the same request. Returns the JSONL path;
    images are relative to ``folder``.
    """
    import numpy as np

    from lrsvqa.testing import make_ship_scene

    if n_questions < 1:
        raise ConfigError(f"--synthetic needs at least 1 question, got {n_questions}")
    if not 64 <= sizes[0] <= sizes[1]:
        raise ConfigError(f"synthetic scene sizes must be 64 <= min <= max, got {sizes}")
    out = Path(folder)
    jsonl = out / "questions.jsonl"
    request = {
        "n_questions": n_questions,
        "seed": seed,
        "sizes": list(sizes),
        "per_scene": per_scene,
    }
    marker = out / "synthetic.json"
    if jsonl.is_file() and marker.is_file() and json.loads(marker.read_text()) == request:
        return jsonl
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for s in range(math.ceil(n_questions / per_scene)):
        size = int(rng.integers(sizes[0], sizes[1] + 1))
        name = f"scene_{s:04d}.tif"
        scene = make_ship_scene(
            out / name, size, ships=int(rng.integers(2, 9)), seed=seed * 10_000 + s
        )
        ships = scene.ships
        box = list(ships[0].box) if ships else None
        quad = list(_QUADRANTS)[int(rng.integers(0, 4))]
        qr, qc = _QUADRANTS[quad]
        present = any(
            int(sh.center[1] >= size / 2) == qr and int(sh.center[0] >= size / 2) == qc
            for sh in ships
        )
        templates = [
            ("count", "How many ships are there?", str(len(ships)), None),
            ("reasoning", f"Is there a ship in the {quad}?", "yes" if present else "no", None),
            ("object color", "What color is the ship?", "white", box),
            ("object background", "What is on the left side of the image?", "land", None),
            ("object category", "What is the bright object on the water?", "ship", box),
            ("rural or urban", "Is this area rural or urban?", "rural", None),
        ]
        order = rng.permutation(len(templates))[:per_scene]
        for t in order:
            if len(rows) >= n_questions:
                break
            category, text, truth, hbox = templates[int(t)]
            row = {
                "question_id": f"FAIR_synthetic_{len(rows):05d}",
                "image": name,
                "category": category,
                "text": text,
                "ground_truth": truth,
                "image_size": [size, size],
            }
            if hbox is not None:
                row["hbox"] = hbox
            rows.append(row)
    tmp = jsonl.with_name(f"{jsonl.name}.tmp{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, jsonl)
    marker.write_text(json.dumps(request) + "\n")
    return jsonl
