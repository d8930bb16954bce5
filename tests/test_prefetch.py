"""``bench`` prepares the next scene while the model answers about the current one."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from lrsvqa.bench.prefetch import ScenePrefetcher
from lrsvqa.bench.runner import RunOptions, run_benchmark
from tests.bench_fakes import FakeAnswer, FakeAnswerer, subset_rows, write_jsonl, write_standins


class PrefetchingAnswerer(FakeAnswerer):
    """Records, per call, which scenes were prefetched and whether the prefetch of a
    scene had finished before its first question (it must have)."""

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self.events: list[tuple[str, str]] = []
        self.done: set[str] = set()
        self.threads: set[str] = set()
        self.lock = threading.Lock()

    def prefetch(self, scene: str) -> None:
        with self.lock:
            self.events.append(("prefetch", scene))
            self.threads.add(threading.current_thread().name)
        with self.lock:
            self.done.add(scene)

    def ask(self, scene: str, question: str) -> FakeAnswer:
        with self.lock:
            if ("prefetch", scene) in self.events:
                assert scene in self.done, f"asked about {scene} before its prefetch finished"
            self.events.append(("ask", scene))
        return super().ask(scene, question)


def test_runner_prefetches_each_next_scene(tmp_path: Path) -> None:
    rows = subset_rows(12, per_image=3)
    root = tmp_path / "images"
    write_standins(rows, root)
    data = write_jsonl(tmp_path / "subset.jsonl", rows)
    made: list[PrefetchingAnswerer] = []

    def make(options: RunOptions) -> PrefetchingAnswerer:
        made.append(PrefetchingAnswerer(options))
        return made[0]

    options = RunOptions(
        data=data, image_root=root, out=tmp_path / "run", model="fake/x", progress=False
    )
    summary = run_benchmark(options, make)
    assert summary.answered == 12
    answerer = made[0]
    asked = list(dict.fromkeys(s for kind, s in answerer.events if kind == "ask"))
    prefetched = [s for kind, s in answerer.events if kind == "prefetch"]
    assert prefetched == asked[1:]  # every scene but the first, once, in run order
    for scene in prefetched:  # each prefetch was started before its scene's first question
        assert answerer.events.index(("prefetch", scene)) < answerer.events.index(("ask", scene))
    assert all(name.startswith("lrsvqa-prefetch") for name in answerer.threads)


def test_prefetcher_without_prefetch_is_a_no_op() -> None:
    class Plain:
        def ask(self, scene: str, question: str) -> None: ...

    with ScenePrefetcher(Plain(), ["a", "b"]) as prefetcher:
        prefetcher.before("a")
        assert prefetcher.pending == []


def test_prefetch_errors_are_left_to_the_ask() -> None:
    calls = []

    class Failing:
        def prefetch(self, scene: str) -> None:
            calls.append(scene)
            raise OSError("damaged")

    with ScenePrefetcher(Failing(), ["a", "b", "c"]) as prefetcher:
        prefetcher.before("a")
        prefetcher.before("b")  # waits for b's failed prefetch without raising
        prefetcher.before("c")
    assert calls == ["b", "c"]


def test_pipeline_prefetch_reads_ahead(geotiff) -> None:
    from lrsvqa.pipeline import Pipeline
    from lrsvqa.testing.stub import StubAdapter

    path = geotiff(900, 700, blocksize=128, overviews=[2, 4])
    with Pipeline(StubAdapter(), max_new_tokens=1) as pipeline:
        pipeline.prefetch(str(path))
        session = pipeline.session(str(path))
        assert session.pyramid.prefetched_tiles == len(session.pyramid.tiles(0))
        answer = pipeline.ask(str(path), "How many ships?")
        assert session.pyramid.prefetched_tiles == 0  # the first question used them
        assert answer.cost.tiles_encoded.get("0") == len(session.pyramid.tiles(0))
