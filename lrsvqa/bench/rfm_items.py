"""LRS-VQA questions as items for distilling the Region Focus Module (``lrsvqa train-rfm``).

Lives in ``bench`` (not ``focus``) because it reads the benchmark's annotation format:
``focus`` never imports ``bench``.
"""

from __future__ import annotations

import os
from pathlib import Path

from lrsvqa.bench.loader import load_lrsvqa, missing_images
from lrsvqa.errors import ConfigError, DataError
from lrsvqa.focus.teacher import RfmItem


def items_from_lrsvqa(
    jsonl: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None,
    limit: int | None = None,
) -> list[RfmItem]:
    """Items from an LRS-VQA-format question file; every referenced image must exist."""
    root = Path(image_root) if image_root is not None else Path(jsonl).parent
    if not root.is_dir():
        raise ConfigError(f"--image-root {root} is not a folder")
    questions = load_lrsvqa(Path(jsonl), root, limit=limit)
    missing = missing_images(questions)
    if missing:
        raise DataError(
            f"{len(missing)} image(s) named in {jsonl} are not under {root}, e.g. {missing[0]}; "
            "fix --image-root"
        )
    return [RfmItem(q.question_id, Path(str(q.image_path)), q.text) for q in questions]
