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
# Under pytest-xdist the workers share the CPUs: one torch/OpenMP thread each (set before
# torch is imported; subprocesses and notebook kernels inherit it), so that their threads
# do not spin against each other on a small machine.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
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


class ServerLog(list[str]):
    """The Range header of every GET (``"full"`` without one), and the body bytes sent."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes_sent = 0


_BOUNDARY = "lrsvqa-test-byteranges"


class _RangeHandler(SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support as a real server does: one range → 206 with
    Content-Range; several → 206 ``multipart/byteranges`` (RFC 9110 §14.6), which GDAL's
    /vsicurl/ multi-range path parses. Reads only the requested bytes from disk."""

    requests_seen: ClassVar[ServerLog]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _ranges(self, header: str, size: int) -> list[tuple[int, int]] | None:
        if not header.startswith("bytes="):
            return None
        out = []
        for spec in header[len("bytes=") :].split(","):
            start_s, _, end_s = spec.strip().partition("-")
            if not start_s:  # suffix range: the last N bytes
                start, end = max(0, size - int(end_s)), size - 1
            else:
                start, end = int(start_s), min(int(end_s) if end_s else size - 1, size - 1)
            if start <= end:
                out.append((start, end))
        return out

    def _send(self, data: bytes) -> None:
        self.wfile.write(data)
        self.requests_seen.bytes_sent += len(data)

    def do_GET(self) -> None:
        header = self.headers.get("Range")
        self.requests_seen.append(header or "full")
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        ranges = self._ranges(header, size) if header else None
        with path.open("rb") as handle:
            if ranges is None:
                self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                self._send(handle.read())
                return
            if not ranges:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            parts = []
            for start, end in ranges:
                handle.seek(start)
                parts.append((start, end, handle.read(end - start + 1)))
        self.send_response(206)
        self.send_header("Accept-Ranges", "bytes")
        if len(parts) == 1:
            start, end, body = parts[0]
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self._send(body)
            return
        chunks = []
        for start, end, body in parts:
            head = (
                f"--{_BOUNDARY}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Range: bytes {start}-{end}/{size}\r\n\r\n"
            )
            chunks += [head.encode(), body, b"\r\n"]
        chunks.append(f"--{_BOUNDARY}--\r\n".encode())
        payload = b"".join(chunks)
        self.send_header("Content-Type", f"multipart/byteranges; boundary={_BOUNDARY}")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self._send(payload)

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
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path, ServerLog]]:
    """A range-serving HTTP server on 127.0.0.1 over a temp folder: (base_url, folder, log)."""
    root = tmp_path / "www"
    root.mkdir()
    seen = ServerLog()
    handler = type("Handler", (_RangeHandler,), {"requests_seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, seen
    finally:
        server.shutdown()
        server.server_close()
