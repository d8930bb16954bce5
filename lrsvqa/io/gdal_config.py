"""GDAL settings for lrsvqa's reads, set once per process; the user's own env wins.

Every option below is applied the first time lrsvqa opens or converts a raster,
unless the variable is already in the environment (``GDAL_CACHEMAX=1024 lrsvqa ask …``
keeps 1,024 MB). ``gdal_settings()`` reports what is in force.
"""

from __future__ import annotations

import os
import threading

#: GDAL's block cache, MB. GDAL's own default is 5 % of RAM (1.2 GB on a 24 GB
#: machine), which a PNG conversion fills to the brim. lrsvqa keeps the tiles it read in
#: its own session cache, so GDAL's only needs the blocks that neighbouring tiles of one
#: batch share: 32 MB holds ~42 decoded 512 px RGB blocks. Every block cached is resident
#: memory, once per read thread's handle: at 256 MB one ask on a sparse 100,000 px scene
#: peaked 60 MB higher (673 vs 613 MB) and a 7,000 px PNG conversion at 468 vs 183 MB,
#: for the same read and conversion times (benchmarks/RESULTS.md). The decode of a
#: raster that cannot be read piecewise sets its own cap (``io.scene``).
DEFAULT_CACHEMAX_MB = 32

#: Option -> value. ``GDAL_NUM_THREADS`` lets GDAL decode the blocks under one read
#: in parallel (GTiff DEFLATE/ZSTD/LZW, GDAL >= 3.6); lrsvqa's own read threads
#: (``LRSVQA_READ_THREADS``) read several tiles at once on top, so the default gives each
#: read thread its share of the CPUs (``gdal_threads()``): 1 on a machine of <= 4 CPUs.
#: Both at full width oversubscribe the cores: on 2 CPUs, 24 native tiles of a
#: 20,000 px DEFLATE COG took 0.19-0.20 s with 2 read threads x ALL_CPUS against
#: 0.14-0.16 s with 2 x 1 (benchmarks/RESULTS.md). Conversion compresses with its own
#: ``NUM_THREADS=ALL_CPUS`` creation option.
GDAL_DEFAULTS: dict[str, str] = {
    "GDAL_CACHEMAX": str(DEFAULT_CACHEMAX_MB),
    "GDAL_NUM_THREADS": "per read thread",  # resolved by gdal_threads()
    # Remote scenes: one request for several ranges, neighbouring ranges merged.
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
}

#: Set per open of a remote scene only (a local scene keeps its .ovr sidecars).
REMOTE_OPEN_OPTIONS: dict[str, str] = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}

_lock = threading.Lock()


def gdal_threads() -> str:
    """GDAL's decoding threads per read: the CPUs shared among lrsvqa's read threads."""
    from lrsvqa.io.limits import read_threads

    return str(max(1, (os.cpu_count() or 1) // read_threads()))


def _default(key: str) -> str:
    return gdal_threads() if key == "GDAL_NUM_THREADS" else GDAL_DEFAULTS[key]


_applied: dict[str, str] | None = None


def configure_gdal() -> dict[str, str]:
    """Apply ``GDAL_DEFAULTS`` once (options already in ``os.environ`` are left alone)."""
    global _applied
    with _lock:
        if _applied is not None:
            return _applied
        from rasterio.env import set_gdal_config

        applied: dict[str, str] = {}
        for key in GDAL_DEFAULTS:
            if key in os.environ:
                continue
            value = _default(key)
            if key == "GDAL_CACHEMAX":
                # rasterio passes an int to GDALSetCacheMax64 (bytes), effective even
                # after GDAL has already allocated its cache.
                set_gdal_config(key, int(value) * 2**20)
            else:
                set_gdal_config(key, value)
            applied[key] = value
        _applied = applied
        return applied


def gdal_settings() -> dict[str, str]:
    """Each option of ``GDAL_DEFAULTS`` and the value in force, with where it comes from."""
    applied = configure_gdal()
    out = {}
    for key in GDAL_DEFAULTS:
        if key in os.environ:
            out[key] = f"{os.environ[key]} (environment)"
        else:
            out[key] = f"{applied.get(key, _default(key))} (lrsvqa default)"
    return out
