"""``bench prepare``: fill the conversion cache for a whole benchmark, ahead of the model.

Every image of the annotation file that cannot be read piecewise and is over the
cache's size threshold is converted to a tiled COG (``lrsvqa.io.cogcache``) by
several worker processes, largest first. Each entry lands atomically, so a killed
run is resumed by running it again: finished scenes are cache hits. A scene that
fails (a damaged PNG) is one line in the errors file, and the others go on.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lrsvqa.bench.loader import load_lrsvqa
from lrsvqa.errors import ConfigError, RasterReadError

log = logging.getLogger(__name__)

STATUSES = ("converted", "cached", "not-needed", "off", "failed", "missing")


@dataclass
class PrepareSummary:
    """What ``prepare_benchmark`` did, image by image counted by status."""

    images: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    errors_file: str = ""
    cache_dir: str = ""
    cache_bytes: int = 0
    cap_bytes: int = 0
    evicted: int = 0  # entries of this run already evicted again: the cap is too small
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_jobs() -> int:
    """Worker processes: min(4, CPUs); each converts in well under 1 GB."""
    return max(1, min(4, os.cpu_count() or 1))


def _die_with_parent(parent: int) -> None:
    """Linux: this worker is killed when ``parent``, the process that started it, dies.

    Without it a ``kill -9`` of ``bench prepare`` leaves its workers converting in the
    background (and starting the next queued scene), then waiting forever for work from
    the dead parent. Their ``.part`` files are removed by the next run (``cogcache``
    checks the writer's pid). Only pool workers call it: on the main process it would
    kill a ``nohup``-ed run with its shell.
    """
    import ctypes
    import ctypes.util
    import signal

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):  # no usable libc: keep the default behaviour
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _init_worker(gdal_threads: int, parent: int | None = None) -> None:
    """GDAL settings for this process; a pool worker (``parent`` given) dies with it."""
    from rasterio.env import set_gdal_config

    from lrsvqa.io.gdal_config import configure_gdal

    if parent is not None:
        _die_with_parent(parent)
    configure_gdal()
    if "GDAL_NUM_THREADS" not in os.environ:
        set_gdal_config("GDAL_NUM_THREADS", str(gdal_threads))  # share the CPUs between jobs


def _prepare_one(path: str) -> dict[str, Any]:
    from lrsvqa.io.cogcache import ensure_cog

    start = time.perf_counter()
    try:
        result = ensure_cog(path, progress=False)
    except Exception as exc:  # one bad scene must not stop the others
        return {
            "image": path,
            "status": "failed",
            "error": type(exc).__name__,
            "message": " ".join(str(exc).split()),
            "seconds": round(time.perf_counter() - start, 3),
        }
    return {
        "image": path,
        "status": result.status,
        "cog": None if result.cog is None else str(result.cog),
        "reason": result.reason,
        "seconds": round(time.perf_counter() - start, 3),
    }


def prepare_benchmark(
    data: Path,
    image_root: Path,
    *,
    jobs: int | None = None,
    errors_file: Path | None = None,
    progress: bool = True,
) -> PrepareSummary:
    """Convert the benchmark's images that need it into the conversion cache."""
    from lrsvqa.io import cogcache

    if not cogcache.cache_enabled():
        raise ConfigError(
            f"{cogcache.COG_CACHE_ENV} is off: there is no conversion cache to prepare; "
            f"unset {cogcache.COG_CACHE_ENV}"
        )
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: use at least 1")
    start = time.perf_counter()
    questions = load_lrsvqa(data, image_root)
    images = list(dict.fromkeys(q.image_path for q in questions if q.image_path is not None))
    summary = PrepareSummary(images=len(images), cache_dir=str(cogcache.cog_cache_dir()))
    errors_path = errors_file or cogcache.cog_cache_dir() / "errors.jsonl"
    summary.errors_file = str(errors_path)
    present = [p for p in images if p.is_file()]
    summary.counts["missing"] = len(images) - len(present)
    # Largest first: the long conversions start at once and the tail is short.
    present.sort(key=lambda p: p.stat().st_size, reverse=True)
    errors_path.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    with errors_path.open("w", encoding="utf-8") as errors, _bar(len(present), progress) as bar:
        for row in _run(present, jobs):
            results.append(row)
            summary.counts[row["status"]] += 1
            if row["status"] == "failed":
                summary.failed.append(row["image"])
                errors.write(json.dumps({**row, "time": time.time()}) + "\n")
                errors.flush()
                log.error("%s: %s: %s", row["image"], row["error"], row["message"])
            bar.update(1)
            bar.set_postfix(
                converted=summary.counts["converted"],
                cached=summary.counts["cached"],
                failed=summary.counts["failed"],
                refresh=False,
            )
    summary.evicted = sum(1 for r in results if r.get("cog") and not Path(r["cog"]).exists())
    summary.cache_bytes = sum(p.stat().st_size for p in cogcache.entries() if p.exists())
    summary.cap_bytes = cogcache.cap_bytes()
    summary.seconds = time.perf_counter() - start
    return summary


def _run(paths: list[Path], jobs: int) -> Any:
    if not paths:
        return
    gdal_threads = max(1, (os.cpu_count() or 1) // jobs)
    if jobs == 1:
        _init_worker(gdal_threads)
        for p in paths:
            yield _prepare_one(str(p))
        return
    # spawn, not fork: GDAL's and tqdm's threads must not be copied mid-flight.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        jobs,
        mp_context=context,
        initializer=_init_worker,
        initargs=(gdal_threads, os.getpid()),
    ) as pool:
        futures = [pool.submit(_prepare_one, str(p)) for p in paths]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BrokenProcessPool:
            raise RasterReadError(
                "a conversion worker died (out of memory?); what was converted is kept: "
                "run the same command again, with fewer --jobs"
            ) from None


def _bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        unit="scene",
        desc="lrsvqa bench prepare",
        file=sys.stderr,
        disable=not enabled or not sys.stderr.isatty(),
        dynamic_ncols=True,
    )
