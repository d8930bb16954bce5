"""Stand-ins for ``lrsvqa ask-many``'s model, and a subprocess entry point.

``stub_answerer`` replaces ``lrsvqa.cli.ask_many_cmd.make_answerer``: model ids
``stub`` (the stub adapter: the real pipeline, no neural network), ``stub/slow``
(50 ms more per answer), ``tiny/<family>`` (the real tiny model). With
``LRSVQA_TEST_KILL_MARKER=PATH`` set, the first question about a scene whose name
contains ``kill`` SIGKILLs the process (after creating PATH, so a retry passes):
a worker dying mid-run. Run ``python -m tests.ask_many_fakes ask-many …`` from the
repository root to get the ordinary CLI with this answerer.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from lrsvqa.cli.ask_many_cmd import make_answerer as _real_answerer


class _Answerer:
    """Delegates to a Pipeline; adds the delay and the kill point."""

    def __init__(self, pipeline: Any, delay: float) -> None:
        self.pipeline = pipeline
        self.delay = delay
        self.model_id = pipeline.model_id
        self.revision = pipeline.revision

    def config_dict(self) -> dict[str, Any]:
        return dict(self.pipeline.config_dict())

    def ask(self, scene: str, question: str, **kw: Any) -> Any:
        marker = os.environ.get("LRSVQA_TEST_KILL_MARKER")
        if marker and "kill" in Path(scene).name and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        if self.delay:
            time.sleep(self.delay)
        return self.pipeline.ask(scene, question, **kw)


def stub_answerer(options: Any) -> _Answerer:
    """Drop-in for ``lrsvqa.cli.ask_many_cmd.make_answerer``."""
    from lrsvqa.pipeline import Pipeline
    from lrsvqa.testing.stub import StubAdapter

    model_id = options.model.get("model_id") or ""
    if model_id.startswith("tiny/"):
        return _Answerer(_real_answerer(options), 0.0)
    if not model_id.startswith("stub"):
        raise ValueError(f"the fake answers stub, stub/slow or tiny/<family>, got {model_id!r}")
    return _Answerer(Pipeline(StubAdapter()), 0.05 if model_id.endswith("/slow") else 0.0)


def _main() -> int:
    from lrsvqa.cli import ask_many_cmd
    from lrsvqa.cli.main import main

    ask_many_cmd.make_answerer = stub_answerer  # type: ignore[assignment]
    return main()


if __name__ == "__main__":
    sys.exit(_main())


def make_scenes(folder: Path, n: int, *, damaged: int = 0, no_crs: int = 0) -> list[Path]:
    """``n`` small GeoTIFFs in ``folder`` (sizes, CRSs and places vary): the first
    ``no_crs`` without CRS; the last ``damaged`` broken in turn (garbage bytes, an
    empty file, a truncated TIFF)."""
    from affine import Affine

    from lrsvqa.testing import write_geotiff

    folder.mkdir(parents=True, exist_ok=True)
    crss = ["EPSG:32633", "EPSG:32650", "EPSG:3857", "EPSG:4326"]
    paths = []
    for i in range(n):
        path = folder / f"scene{i:02d}.tif"
        crs = None if i < no_crs else crss[i % len(crss)]
        if crs == "EPSG:4326":
            transform = Affine(1e-5, 0, 10 + i * 0.01, 0, -1e-5, 45 + i * 0.01)
        elif crs == "EPSG:3857":
            transform = Affine(2.0, 0, 1_000_000 + i * 500, 0, -2.0, 5_000_000.0)
        else:
            transform = Affine(0.5, 0, 500_000 + i * 100, 0, -0.5, 4_500_000.0)
        write_geotiff(path, 72 + 8 * (i % 5), 64 + 8 * (i % 3), crs=crs, transform=transform)
        paths.append(path)
    for k, path in enumerate(paths[n - damaged :] if damaged else []):
        if k % 3 == 0:
            path.write_bytes(b"this is not a raster\n" * 10)
        elif k % 3 == 1:
            path.write_bytes(b"")
        else:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 3])
    return paths
