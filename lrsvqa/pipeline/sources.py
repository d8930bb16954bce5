"""Many scenes from one list of sources: files, globs, folders, list files, STAC.

``expand_sources`` turns what a user types (``scenes/``, ``"2024/*.tif"``,
``urls.txt``, ``catalog.json``, ``https://…/item.json``) into ``SceneRef`` values in
a stable order, each scene once. A source argument that names nothing is a
ConfigError (a typo should stop the run at once); an entry of a list file or a
STAC item that cannot be used becomes a ``SceneRef`` with a ``problem``, so a run
can report it in its errors table and go on.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrsvqa.errors import ConfigError
from lrsvqa.io.scene import is_remote

log = logging.getLogger(__name__)

#: File extensions taken as rasters when a folder is searched.
RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".img", ".vrt")
#: File extensions read as a list of paths/URLs, one a line.
LIST_SUFFIXES = (".txt", ".lst", ".list")
#: File extensions read as STAC JSON (Item, ItemCollection, Catalog, Collection).
STAC_SUFFIXES = (".json", ".geojson")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class SceneRef:
    """One scene to ask about: where it is and, from STAC, what it is."""

    location: str  # absolute local path or URL
    origin: str = ""  # the source argument it came from
    item_id: str | None = None
    datetime: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    problem: str | None = None  # why this scene cannot be asked about (it goes to errors)

    @property
    def key(self) -> str:
        """A short stable id of the scene (its location and STAC item)."""
        raw = f"{self.location}\n{self.item_id or ''}"
        return hashlib.sha1(raw.encode("utf-8")).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "origin": self.origin,
            "item_id": self.item_id,
            "datetime": self.datetime,
            "properties": dict(self.properties),
            "problem": self.problem,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SceneRef:
        return cls(
            location=str(data["location"]),
            origin=str(data.get("origin") or ""),
            item_id=data.get("item_id"),
            datetime=data.get("datetime"),
            properties=dict(data.get("properties") or {}),
            problem=data.get("problem"),
        )


def _absolute(path: str, base: Path | None = None) -> str:
    if is_remote(path):
        return path
    p = Path(path).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p.absolute())


def _is_stac(path: str) -> bool:
    return path.lower().split("?", 1)[0].endswith(STAC_SUFFIXES)


def expand_sources(sources: Iterable[str], *, asset: str = "visual") -> list[SceneRef]:
    """Every scene the sources name, in order, duplicates dropped (first kept)."""
    refs: dict[tuple[str, str | None], SceneRef] = {}
    count = 0
    for source in sources:
        count += 1
        for ref in _expand_one(str(source), asset):
            refs.setdefault((ref.location, ref.item_id), ref)
    if count == 0:
        raise ConfigError("no sources given: name raster files, folders, globs, lists or STAC")
    return list(refs.values())


def _expand_one(source: str, asset: str) -> Iterator[SceneRef]:
    if not source.strip():
        raise ConfigError("an empty source was given; name a file, folder, glob, list or STAC")
    if is_remote(source):
        if _is_stac(source):
            yield from stac_scenes(source, asset=asset)
        else:
            yield SceneRef(source, origin=source)
        return
    path = Path(source).expanduser()
    if path.is_dir():
        found = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES
        )
        if not found:
            raise ConfigError(
                f"{source}: the folder holds no raster files ({', '.join(RASTER_SUFFIXES)})"
            )
        yield from (SceneRef(_absolute(str(p)), origin=source) for p in found)
    elif path.is_file():
        suffix = path.suffix.lower()
        if suffix in LIST_SUFFIXES:
            yield from list_file_scenes(path)
        elif suffix in STAC_SUFFIXES:
            yield from stac_scenes(str(path), asset=asset)
        else:
            yield SceneRef(_absolute(source), origin=source)
    elif _GLOB_CHARS & set(source):
        matches = sorted(glob.glob(str(path), recursive=True))
        files = [m for m in matches if Path(m).is_file()]
        if not files:
            raise ConfigError(f"{source}: the pattern matches no files; check it (quote it)")
        yield from (SceneRef(_absolute(m), origin=source) for m in files)
    else:
        raise ConfigError(
            f"{source}: no such file or folder; give raster files, folders, globs, "
            "a .txt list of paths/URLs or STAC JSON"
        )


def list_file_scenes(path: Path) -> Iterator[SceneRef]:
    """One scene per line of a text file (``#`` comments and blank lines skipped); a
    relative path is relative to the list file's folder. Missing files are kept: the
    run reports them in its errors table."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the list of scenes ({exc})") from None
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if is_remote(entry) and _is_stac(entry):
            yield from stac_scenes(entry, asset="visual")
            continue
        yield SceneRef(_absolute(entry, path.parent), origin=str(path))


def _stac_kind(data: Mapping[str, Any]) -> str:
    if data.get("type") == "FeatureCollection":
        return "ItemCollection"
    if data.get("type") == "Feature":
        return "Item"
    if data.get("type") in ("Catalog", "Collection"):
        return str(data["type"])
    raise ConfigError("not a STAC Item, ItemCollection, Catalog or Collection")


def _read_json(source: str) -> dict[str, Any]:
    if is_remote(source):
        import pystac

        return dict(pystac.StacIO.default().read_json(source))
    with open(source, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ConfigError("expected a JSON object")
    return data


def stac_scenes(source: str, *, asset: str = "visual") -> Iterator[SceneRef]:
    """The chosen asset of every item of a STAC Item, ItemCollection, Catalog or
    Collection (local path or URL), with the item's id, datetime and properties."""
    try:
        import pystac
    except ImportError:
        raise ConfigError(
            f"{source}: reading STAC needs pystac: pip install 'lrsvqa[geo]'"
        ) from None
    location = _absolute(source)
    try:
        data = _read_json(location)
        kind = _stac_kind(data)
        if kind == "Item":
            items: Iterable[Any] = [pystac.Item.from_file(location)]
        elif kind == "ItemCollection":
            collection = pystac.ItemCollection.from_dict(data, preserve_dict=False)
            items = list(collection)
            base = location
            for item in items:  # ItemCollection members resolve hrefs against the file
                if item.get_self_href() is None:
                    item.set_self_href(base)
        else:
            catalog = pystac.read_file(location)
            items = list(catalog.get_items(recursive=True))  # type: ignore[attr-defined]
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except (OSError, ValueError, KeyError, TypeError, pystac.STACError) as exc:
        raise ConfigError(f"{source}: cannot read STAC ({' '.join(str(exc).split())})") from None
    for item in items:
        yield _item_scene(item, asset, source)


def _item_scene(item: Any, asset: str, source: str) -> SceneRef:
    when = item.datetime or item.common_metadata.start_datetime
    stamp = when.isoformat() if when is not None else None
    properties = json.loads(json.dumps(item.properties, default=str))
    chosen = item.assets.get(asset)
    if chosen is None:
        names = ", ".join(sorted(item.assets)) or "none"
        return SceneRef(
            location=f"stac:{item.id}",
            origin=source,
            item_id=item.id,
            datetime=stamp,
            properties=properties,
            problem=f"STAC item {item.id!r} has no asset {asset!r} (it has: {names}); "
            "choose one with --asset",
        )
    href = chosen.get_absolute_href() or chosen.href
    return SceneRef(
        location=_absolute(href),
        origin=source,
        item_id=item.id,
        datetime=stamp,
        properties=properties,
    )
