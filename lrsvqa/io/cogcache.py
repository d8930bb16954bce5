"""The conversion cache: big scenes that cannot be read piecewise, converted once.

A PNG, a JPEG or a GeoTIFF without overviews has to be decoded whole for every
coarse read. Over ``$LRSVQA_COG_MIN_SIDE`` px (default 8,000) on its long side, such a
scene is converted on first use into a tiled COG under ``$LRSVQA_CACHE/cog/``, and
every later open reads that COG's windows instead.

- Keyed by the source's resolved path, size and mtime: a changed file is a new entry
  (and replaces the old one of the same path).
- Atomic: a conversion writes a uniquely named ``.part`` file and renames it into
  place when complete, so a killed conversion is never served; it is redone.
  Concurrent conversions of one scene (``bench prepare`` workers, two ``ask``) wait
  for each other through a lock file.
- Bounded: ``$LRSVQA_COG_CACHE_GB`` (default 100) caps the folder; the least
  recently used entries go first.
- ``LRSVQA_COG_CACHE=off`` disables it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from lrsvqa.errors import ConfigError

log = logging.getLogger(__name__)

CACHE_ROOT_ENV = "LRSVQA_CACHE"
COG_CACHE_ENV = "LRSVQA_COG_CACHE"
COG_CACHE_GB_ENV = "LRSVQA_COG_CACHE_GB"
COG_MIN_SIDE_ENV = "LRSVQA_COG_MIN_SIDE"
DEFAULT_CAP_GB = 100.0
DEFAULT_MIN_SIDE = 8000
#: Bump when the conversion changes, so old entries are not served.
FORMAT_VERSION = "cog-512-deflate-1"
#: A ``.part`` file this old is removed even if its writer cannot be checked.
STALE_PART_S = 24 * 3600

_OFF = {"off", "0", "no", "false", "disable", "disabled"}
_PART = re.compile(r"\.(?P<host>[^.]+)-(?P<pid>\d+)-[0-9a-f]{8}\.part(\.tif)?$")


def cache_root() -> Path:
    """``$LRSVQA_CACHE`` or ``~/.cache/lrsvqa``."""
    raw = os.environ.get(CACHE_ROOT_ENV, "").strip()
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "lrsvqa"


def cog_cache_dir() -> Path:
    return cache_root() / "cog"


def cache_enabled() -> bool:
    """False when ``$LRSVQA_COG_CACHE`` is off/0/no/false."""
    return os.environ.get(COG_CACHE_ENV, "").strip().lower() not in _OFF


def cap_bytes() -> int:
    raw = os.environ.get(COG_CACHE_GB_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_CAP_GB
    except ValueError:
        raise ConfigError(f"{COG_CACHE_GB_ENV}={raw!r} is not a number of gigabytes") from None
    if value < 0:
        raise ConfigError(f"{COG_CACHE_GB_ENV}={raw!r} must not be negative")
    return int(value * 2**30)


def min_side() -> int:
    raw = os.environ.get(COG_MIN_SIDE_ENV, "").strip()
    try:
        value = int(float(raw)) if raw else DEFAULT_MIN_SIDE
    except ValueError:
        raise ConfigError(f"{COG_MIN_SIDE_ENV}={raw!r} is not a number of pixels") from None
    if value < 1:
        raise ConfigError(f"{COG_MIN_SIDE_ENV}={raw!r} must be positive")
    return value


@dataclass(frozen=True)
class CacheResult:
    """What ``ensure_cog`` did: ``status`` is converted, cached, not-needed or off."""

    source: str
    status: str
    cog: Path | None = None
    reason: str = ""
    seconds: float = 0.0


def needs_conversion(path: str) -> tuple[bool, str]:
    """Whether a local raster is read much better from a tiled COG, and why (not)."""
    import rasterio
    from rasterio.errors import RasterioError

    from lrsvqa.errors import SceneOpenError
    from lrsvqa.io.paths import gdal_message, without_crs_warnings

    try:
        with without_crs_warnings():
            src = rasterio.open(path)
        with src:
            width, height, driver = src.width, src.height, src.driver
            overviews = src.overviews(1) if src.count else []
            block_h, block_w = src.block_shapes[0] if src.count else (height, width)
    except RasterioError as exc:
        raise SceneOpenError(
            f"{path}: not a raster GDAL can read ({gdal_message(exc)}); "
            "check the file is a complete GeoTIFF, PNG or JPEG"
        ) from None
    side, limit = max(width, height), min_side()
    if overviews:
        return False, "has overviews: read windowed"
    if side < limit:
        return False, f"{side} px long side is under the {limit} px threshold"
    tiled = block_w < width and block_h < height
    kind = "tiled" if tiled else ("striped" if driver == "GTiff" else driver)
    return True, f"{driver} ({kind}) without overviews, {width} x {height} px"


def entry_for(path: str) -> Path:
    """The cache file for the current version (size, mtime) of ``path``."""
    p = Path(path).resolve()
    stat = p.stat()
    source_key = hashlib.sha256(str(p).encode()).hexdigest()[:12]
    version_key = hashlib.sha256(
        f"{stat.st_size}\0{stat.st_mtime_ns}\0{FORMAT_VERSION}".encode()
    ).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", p.stem)[:40] or "scene"
    return cog_cache_dir() / f"{stem}-{source_key}-{version_key}.tif"


def cached_cog(path: str | os.PathLike[str], *, progress: bool = False) -> Path | None:
    """The cached COG to read instead of ``path``, converting it now if needed.

    ``None`` when the cache is off, the scene is remote, or it reads well as it is.
    """
    return ensure_cog(path, progress=progress).cog


def ensure_cog(path: str | os.PathLike[str], *, progress: bool = False) -> CacheResult:
    """Look ``path`` up in the conversion cache; convert it on a miss."""
    from lrsvqa.io.paths import check_local_file, is_remote

    source = os.fspath(path)
    if not cache_enabled():
        return CacheResult(source, "off", reason=f"{COG_CACHE_ENV} is off")
    if is_remote(source):
        return CacheResult(source, "not-needed", reason="remote scene: read windowed")
    check_local_file(source)
    needed, reason = needs_conversion(source)
    if not needed:
        return CacheResult(source, "not-needed", reason=reason)
    entry = entry_for(source)
    if entry.exists():
        _touch(entry)
        return CacheResult(source, "cached", entry, reason)
    start = time.perf_counter()
    converted = _convert_locked(source, entry, progress)
    status = "converted" if converted else "cached"
    return CacheResult(source, status, entry, reason, time.perf_counter() - start)


def _convert_locked(source: str, entry: Path, progress: bool) -> bool:
    """Convert under the entry's lock; False if another process did it meanwhile."""
    from lrsvqa.io.convert import convert_to_cog

    entry.parent.mkdir(parents=True, exist_ok=True)
    lock_path = entry.with_name(entry.name + ".lock")
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process converts this scene: wait
        try:
            if entry.exists():
                _touch(entry)
                return False
            _remove_other_versions(entry)
            log.info("converting %s to a tiled COG in the cache: %s", source, entry)
            convert_to_cog(
                source,
                entry,
                progress=progress,
                desc=f"first use of {Path(source).name}: converting to a cached COG",
                tags={"LRSVQA_SOURCE": str(Path(source).resolve())},
                part_suffix=part_suffix(),
            )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    evict(keep=entry)
    return True


def part_suffix() -> str:
    """A ``.part`` name no other writer uses, that says which process wrote it."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32] or "host"
    return f".{host}-{os.getpid()}-{os.urandom(4).hex()}.part"


def _touch(entry: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(entry)  # mtime = last use, the LRU order


def _remove_other_versions(entry: Path) -> None:
    """Older entries of the same source path (the file changed since)."""
    prefix = entry.name.rsplit("-", 1)[0] + "-"
    for old in entry.parent.glob(prefix + "*.tif"):
        if old != entry and not _PART.search(old.name):
            _remove(old)


def _remove(entry: Path) -> None:
    entry.unlink(missing_ok=True)
    entry.with_name(entry.name + ".lock").unlink(missing_ok=True)


def _stale_part(path: Path, now: float) -> bool:
    match = _PART.search(path.name)
    if match is None:
        return False
    try:
        age = now - path.stat().st_mtime
    except OSError:
        return False
    if age > STALE_PART_S:
        return True
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32]
    if match["host"] != host:
        return False
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return True  # its writer was killed: this conversion will never finish
    except PermissionError:
        return False
    return _zombie(int(match["pid"]))  # killed, not yet reaped: it will not finish either


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits for its reaper (Linux ``/proc``; False where
    that cannot be read). A killed parent's workers stay zombies where PID 1 does not reap
    orphans, as in some containers."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def entries() -> list[Path]:
    """Complete cache entries, least recently used first."""
    folder = cog_cache_dir()
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("*.tif") if not _PART.search(p.name)]
    stats = []
    for p in found:
        try:
            stats.append((p.stat().st_mtime, p))
        except OSError:
            continue
    return [p for _, p in sorted(stats)]


def evict(keep: Path | None = None, cap: int | None = None) -> list[Path]:
    """Remove leftovers of killed conversions, then LRU entries over the cap."""
    cap = cap_bytes() if cap is None else cap
    folder = cog_cache_dir()
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for part in folder.glob("*.part*"):
        if _stale_part(part, now):
            part.unlink(missing_ok=True)
            removed.append(part)
    current = entries()
    sizes = {}
    for p in current:
        try:
            sizes[p] = p.stat().st_size
        except OSError:
            sizes[p] = 0
    total = sum(sizes.values())
    for old in current:
        if total <= cap:
            break
        if keep is not None and old == keep:
            continue
        _remove(old)
        total -= sizes[old]
        removed.append(old)
        log.info("conversion cache over %.1f GB: removed %s", cap / 2**30, old.name)
    return removed
