"""Shared fixtures: the real sample rasters, a GeoTIFF factory, a range-serving HTTP server."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

# Tests never touch the network or the Hugging Face hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# tiny/<family> models are built once per test session, never into the user's cache.
_TEST_CACHE = tempfile.mkdtemp(prefix="lrsvqa-test-cache-")
os.environ["LRSVQA_CACHE"] = _TEST_CACHE


def pytest_sessionfinish(session: object, exitstatus: int) -> None:
    shutil.rmtree(_TEST_CACHE, ignore_errors=True)


ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"expected the shared sample data at {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture
def geotiff(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``geotiff(width, height, **write_geotiff options)`` → a new file's path."""
    from lrsvqa.testing import write_geotiff

    counter = itertools.count()

    def make(width: int = 300, height: int = 200, name: str | None = None, **kwargs: Any) -> Path:
        path = tmp_path / (name or f"scene{next(counter)}.tif")
        return write_geotiff(path, width, height, **kwargs)

    return make


class _RangeHandler(SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support (what GDAL's /vsicurl/ needs)."""

    requests_seen: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.requests_seen.append(self.headers.get("Range", "full"))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        header = self.headers.get("Range")
        if header and header.startswith("bytes="):
            parts = []
            for spec in header[len("bytes=") :].split(","):
                start_s, _, end_s = spec.strip().partition("-")
                start = int(start_s)
                end = min(int(end_s) if end_s else len(data) - 1, len(data) - 1)
                parts.append((start, end))
            start, end = parts[0][0], parts[-1][1]  # one merged range is enough for GDAL
            body = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A range-serving HTTP server on 127.0.0.1 over a temp folder: (base_url, folder, log)."""
    root = tmp_path / "www"
    root.mkdir()
    seen: list[str] = []
    handler = type("Handler", (_RangeHandler,), {"requests_seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, seen
    finally:
        server.shutdown()
        server.server_close()
