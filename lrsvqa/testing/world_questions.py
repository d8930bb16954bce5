"""LRS-VQA-style questions with honest answers, from a ``World``'s ground truth."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrsvqa.testing.world import CLASSES, PLURALS, World, WorldObject

SUFFIX = " Answer the question using a single word or phrase."
CATEGORIES = (
    "presence",
    "count",
    "object category",
    "object color",
    "object shape",
    "object status",
    "object background",
    "rural or urban",
    "reasoning",
)
NUMBERS = [str(i) for i in range(10)]


@dataclass(frozen=True)
class WorldQuestion:
    category: str
    text: str  # the question as the model gets it (ends with the LRS-VQA suffix)
    answer: str
    targets: tuple[int, ...]  # indices into ``world.objects`` the question is about
    small: bool  # every target object is a few pixels wide

    def to_row(self, question_id: str, image: str, world: World) -> dict[str, object]:
        """An LRS-VQA annotation row (``hbox`` of the first target when there is one)."""
        row: dict[str, object] = {
            "question_id": question_id,
            "image": image,
            # LRS-VQA files know 8 categories: its yes/no presence questions are "reasoning"
            "category": "reasoning" if self.category == "presence" else self.category,
            "world_category": self.category,
            "text": self.text,
            "ground_truth": self.answer,
            "image_size": [world.width, world.height],
            "small": self.small,
            "targets": [list(world.objects[i].box) for i in self.targets],
        }
        if self.targets:
            row["hbox"] = list(world.objects[self.targets[0]].box)
        return row


def _pick(objs: list[tuple[int, WorldObject]], how: str) -> tuple[int, WorldObject]:
    if how == "largest":
        return max(objs, key=lambda t: (t[1].area, -t[1].y))
    if how == "top-most":
        return min(objs, key=lambda t: t[1].center[1])
    if how == "bottom-most":
        return max(objs, key=lambda t: t[1].center[1])
    if how == "left-most":
        return min(objs, key=lambda t: t[1].center[0])
    return max(objs, key=lambda t: t[1].center[0])


def _unique(objs: list[tuple[int, WorldObject]], how: str) -> bool:
    """The relative reference names one object without a near tie."""
    if len(objs) == 1:
        return True
    if how == "largest":
        areas = sorted((o.area for _, o in objs), reverse=True)
        return areas[0] >= 1.3 * areas[1]
    axis = 1 if how in ("top-most", "bottom-most") else 0
    vals = sorted(o.center[axis] for _, o in objs)
    lo_gap = vals[1] - vals[0]
    hi_gap = vals[-1] - vals[-2]
    return (lo_gap if how in ("top-most", "left-most") else hi_gap) >= 20


def world_questions(world: World, *, seed: int = 0) -> list[WorldQuestion]:
    """Every question the world's truth answers honestly (one or two per category)."""
    rng = np.random.default_rng(seed)
    out: list[WorldQuestion] = []
    by_class = {c: [(i, o) for i, o in enumerate(world.objects) if o.cls == c] for c in CLASSES}

    def small(idx: list[int]) -> bool:
        return bool(idx) and all(world.objects[i].small for i in idx)

    # presence: one class present, one absent when possible
    present = [c for c in CLASSES if by_class[c]]
    absent = [c for c in CLASSES if not by_class[c]]
    for pool in (present, absent):
        if pool:
            c = pool[int(rng.integers(0, len(pool)))]
            idx = [i for i, _ in by_class[c]]
            out.append(
                WorldQuestion(
                    "presence",
                    f"Is there a {c} in this image?" + SUFFIX,
                    "yes" if idx else "no",
                    tuple(idx),
                    small(idx),
                )
            )
    # count
    c = CLASSES[int(rng.integers(0, len(CLASSES)))]
    if present and rng.random() < 0.75:
        c = present[int(rng.integers(0, len(present)))]
    idx = [i for i, _ in by_class[c]]
    out.append(
        WorldQuestion(
            "count",
            f"How many {PLURALS[c]} are there in this image?" + SUFFIX,
            str(len(idx)),
            tuple(idx),
            small(idx),
        )
    )
    # object category: the largest object of the scene
    if world.objects:
        i, obj = max(enumerate(world.objects), key=lambda t: (t[1].area, -t[1].y))
        areas = sorted((o.area for o in world.objects), reverse=True)
        if len(areas) == 1 or areas[0] >= 1.3 * areas[1]:
            out.append(
                WorldQuestion(
                    "object category",
                    "What is the largest object in this image?" + SUFFIX,
                    obj.cls,
                    (i,),
                    obj.small,
                )
            )
    # attribute questions about one object named by relative position or size
    attrs = [
        ("object color", None, "What color is the {ref} {cls}?", lambda o: o.colour),
        (
            "object shape",
            "storage tank",
            "What is the shape of the {ref} {cls}?",
            lambda o: o.shape,
        ),
        ("object status", "ship", "Is the {ref} {cls} moving or docked?", lambda o: o.status),
        (
            "object background",
            None,
            "What is the background of the {ref} {cls}?",
            lambda o: o.background,
        ),
    ]
    for category, only, template, value in attrs:
        classes = [only] if only else present
        classes = [c for c in classes if by_class[c]]
        if not classes:
            continue
        c = classes[int(rng.integers(0, len(classes)))]
        hows = ["largest", "top-most", "bottom-most", "left-most", "right-most"]
        how = hows[int(rng.integers(0, len(hows)))]
        if len(by_class[c]) == 1:
            ref_text = "the"
            i, obj = by_class[c][0]
            text = template.replace("the {ref} ", "the ").format(cls=c)
        else:
            if not _unique(by_class[c], how):
                continue
            i, obj = _pick(by_class[c], how)
            ref_text = how
            text = template.format(ref=ref_text, cls=c)
        out.append(WorldQuestion(category, text + SUFFIX, value(obj), (i,), obj.small))
    # rural or urban: the whole land area
    out.append(
        WorldQuestion(
            "rural or urban",
            "Is this a rural or an urban area?" + SUFFIX,
            "urban" if world.urban else "rural",
            (),
            False,
        )
    )
    # reasoning: compare two classes' counts
    a, b = (str(v) for v in rng.choice(CLASSES, size=2, replace=False))
    na, nb = len(by_class[a]), len(by_class[b])
    if na != nb:
        idx = [i for i, _ in by_class[a] + by_class[b]]
        out.append(
            WorldQuestion(
                "reasoning",
                f"Are there more {PLURALS[a]} than {PLURALS[b]} in this image?" + SUFFIX,
                "yes" if na > nb else "no",
                tuple(idx),
                small(idx),
            )
        )
    return out


def answer_vocabulary() -> list[str]:
    """Every answer a world question can have (for tokenizers and majority baselines)."""
    from lrsvqa.testing.world import COLOURS

    words = ["yes", "no", "rural", "urban", "moving", "docked", "parked"]
    words += ["circle", "square", "rectangle", "cross", "water", "road", "concrete", "grass"]
    return words + list(CLASSES) + list(COLOURS) + NUMBERS


def write_world_benchmark(
    folder: str | os.PathLike[str],
    n_scenes: int,
    *,
    seed: int = 30_000_000,
    sizes: tuple[int, ...] = (448, 896, 1792),
) -> Path:
    """World scenes + ``questions.jsonl`` in the LRS-VQA annotation format (images relative
    to ``folder``): input for ``lrsvqa bench`` and ``lrsvqa train-rfm --data``."""
    from lrsvqa.testing.world import make_world, write_world

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    for s in range(n_scenes):
        size = sizes[s % len(sizes)]
        name = f"world_{s:04d}.tif"
        world = make_world(size, seed=seed + s)
        if not (out / name).exists():
            write_world(out / name, world)
        for k, q in enumerate(world_questions(world, seed=seed + s)):
            rows.append(q.to_row(f"FAIR_world_{s:04d}_{k:02d}", name, world))
    jsonl = out / "questions.jsonl"
    tmp = jsonl.with_name(f"{jsonl.name}.tmp{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, jsonl)
    return jsonl
