"""Scenes the service may open: rasters under ``--root`` and URLs under ``--allow-url``.

Every scene id passes through ``SceneCatalog.resolve`` before anything touches a file or
the network, so a traversal, an absolute path, a symlink that leaves the root or a URL
outside the allowed prefixes is refused with a message, never read.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from lrsvqa.errors import LrsvqaError, SceneOpenError

log = logging.getLogger(__name__)

#: Raster files listed and opened. No VRT: a VRT may point at any file on the machine.
RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2")
MAX_SCENE_ID = 1024


class SceneAccessError(LrsvqaError, PermissionError):
    """A scene id that names something outside what the service may open."""


class SceneNotFound(SceneOpenError):
    """A scene id inside the root that names no raster file."""


@dataclass(frozen=True)
class SceneRef:
    """A checked scene: its id as the client gave it and the path or URL to open."""

    id: str
    path: str
    remote: bool


class SceneCatalog:
    """Resolves scene ids and describes scenes (headers only, cached by file identity)."""

    def __init__(self, root: Path, allow_urls: tuple[str, ...] = ()):
        self.root = root.resolve()
        self.allow_urls = tuple(_normal_prefix(p) for p in allow_urls)
        self._info: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._lock = threading.Lock()

    # -- ids -----------------------------------------------------------------------

    def resolve(self, scene_id: str) -> SceneRef:
        if not isinstance(scene_id, str) or not scene_id.strip():
            raise SceneAccessError("the scene id is empty; pick one from GET /api/scenes")
        if len(scene_id) > MAX_SCENE_ID:
            raise SceneAccessError(f"the scene id is over {MAX_SCENE_ID} characters")
        if "\x00" in scene_id:
            raise SceneAccessError("the scene id contains a NUL byte")
        if "://" in scene_id:
            return self._resolve_url(scene_id)
        return self._resolve_path(scene_id)

    def _resolve_path(self, scene_id: str) -> SceneRef:
        text = scene_id
        # Checks run on the id and on its fully percent-decoded form, so that an encoded
        # '..' is caught whichever layer might decode it later.
        for form in (text, _fully_unquoted(text)):
            if form.startswith(("/", "\\", "~")) or (len(form) > 1 and form[1] == ":"):
                raise SceneAccessError(
                    f"scene {scene_id!r}: absolute paths are refused; "
                    "give a path relative to --root"
                )
            if "\\" in form:
                raise SceneAccessError(f"scene {scene_id!r}: use '/' between folder names")
            if any(part in ("..", ".") for part in form.split("/")):
                raise SceneAccessError(
                    f"scene {scene_id!r}: '..' and '.' are refused; give a path inside --root"
                )
        parts = PurePosixPath(text).parts
        if not text.lower().endswith(RASTER_SUFFIXES):
            raise SceneAccessError(
                f"scene {scene_id!r}: not a raster name (allowed: {', '.join(RASTER_SUFFIXES)})"
            )
        candidate = self.root.joinpath(*parts)
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            raise SceneNotFound(
                f"scene {scene_id!r}: no such file under the scene root; see GET /api/scenes"
            ) from None
        if not real.is_relative_to(self.root):
            raise SceneAccessError(
                f"scene {scene_id!r}: a symlink that leads outside the scene root; refused"
            )
        if not real.is_file():
            raise SceneNotFound(f"scene {scene_id!r}: not a file")
        return SceneRef(id=text, path=str(real), remote=False)

    def _resolve_url(self, url: str) -> SceneRef:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SceneAccessError(f"scene URL {url!r}: only http(s) URLs are accepted")
        if "@" in parts.netloc:
            raise SceneAccessError(f"scene URL {url!r}: credentials in URLs are refused")
        path = _fully_unquoted(parts.path)
        if any(seg in ("..", ".") for seg in path.split("/")) or "\\" in path:
            raise SceneAccessError(f"scene URL {url!r}: '..' and '.' segments are refused")
        normal = f"{parts.scheme}://{parts.netloc.lower()}{parts.path}"
        if parts.query:
            normal += f"?{parts.query}"
        if not any(normal.startswith(prefix) for prefix in self.allow_urls):
            allowed = ", ".join(self.allow_urls) or "none (start the server with --allow-url)"
            raise SceneAccessError(f"scene URL {url!r} is not under an allowed prefix: {allowed}")
        return SceneRef(id=normal, path=normal, remote=True)

    # -- listing -------------------------------------------------------------------

    def list(self) -> list[dict[str, Any]]:
        """Every raster under the root (symlinks that leave it are skipped), described."""
        found: list[dict[str, Any]] = []
        for folder, dirs, files in os.walk(self.root, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith(".") or not name.lower().endswith(RASTER_SUFFIXES):
                    continue
                rel = (Path(folder) / name).relative_to(self.root).as_posix()
                try:
                    ref = self._resolve_path(rel)
                except LrsvqaError:
                    continue
                found.append(self.describe(ref))
        return found

    def describe(self, ref: SceneRef) -> dict[str, Any]:
        """Size, bands, CRS and footprint in EPSG:4326 (or the error that stops opening it)."""
        key: tuple[Any, ...] = (ref.id, ref.path)
        if not ref.remote:
            stat = os.stat(ref.path)
            key = (ref.id, ref.path, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._info.get(key)
        if cached is not None:
            return cached
        info = _describe(ref)
        with self._lock:
            if len(self._info) > 4096:
                self._info.clear()
            self._info[key] = info
        return info


def _describe(ref: SceneRef) -> dict[str, Any]:
    from lrsvqa.io import open_scene

    out: dict[str, Any] = {"id": ref.id, "remote": ref.remote}
    try:
        with open_scene(ref.path) as scene:
            info = scene.info()
            out.update(
                width=scene.width,
                height=scene.height,
                bands=info.count,
                dtype=scene.dtype,
                rgb_bands=list(scene.bands),
                crs=info.crs,
                read_mode=info.read_mode,
                overviews=info.overviews,
                size_bytes=info.size_bytes,
                footprint=footprint_4326(scene) if scene.crs else None,
                pixel_coordinates=scene.crs is None,
                error=None,
            )
    except LrsvqaError as exc:
        out.update(error=" ".join(str(exc).split()).replace(ref.path, ref.id))
    except Exception as exc:
        if not type(exc).__module__.startswith("rasterio"):
            raise
        detail = " ".join(str(exc).split()).replace(ref.path, ref.id)[:200]
        out.update(error=f"{ref.id}: cannot read the scene ({detail}); the file is damaged")
    return out


def footprint_4326(scene: Any) -> dict[str, Any]:
    """The scene's outline in EPSG:4326 as a GeoJSON polygon (edges follow the projection)."""
    from shapely.geometry import mapping

    from lrsvqa.io import Window, reproject_geometry, window_polygon

    outline = window_polygon(Window(0, 0, scene.width, scene.height), scene.transform)
    return dict(mapping(reproject_geometry(outline, scene.crs, "EPSG:4326", segments=32)))


def _fully_unquoted(text: str) -> str:
    """Percent-decoding repeated until stable: '%252e%252e' is '..' too."""
    for _ in range(4):
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return text


def _normal_prefix(prefix: str) -> str:
    parts = urlsplit(prefix)
    return f"{parts.scheme}://{parts.netloc.lower()}{parts.path}"
