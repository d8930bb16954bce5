"""Answers as geospatial tables: one row per scene × question, in EPSG:4326.

``answer_row`` turns an ``Answer`` into a plain JSON-ready row (geometries as
GeoJSON mappings in EPSG:4326), which is what a resumable run logs; the tables
are built from rows, so a table written after a resume equals one written in a
single go. ``to_geodataframe`` builds the answers table from ``Answer`` objects,
``write_table`` writes GeoParquet, GeoJSON or CSV (WKT) by extension.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shapely.geometry import MultiPolygon, Polygon, box, mapping, shape

from lrsvqa.errors import ConfigError
from lrsvqa.io.geo import reproject_geometry
from lrsvqa.numbers import UNITS
from lrsvqa.pipeline.answer import Answer
from lrsvqa.pipeline.sources import SceneRef

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

WGS84 = "EPSG:4326"
#: Output formats by file extension.
FORMATS = {".parquet": "parquet", ".geoparquet": "parquet", ".geojson": "geojson", ".csv": "csv"}

#: Columns of the answers table, in order (``footprint`` is the active geometry).
ANSWER_COLUMNS: tuple[str, ...] = (
    "answer_id",
    "scene",
    "item_id",
    "datetime",
    "question",
    "answer",
    "question_type",
    "answer_count",
    "answer_yes",
    "scene_crs",
    "finest_level",
    "evidence_tiles",
    "vision_tokens",
    "vision_tokens_encoded",
    "tflops",
    "seconds",
    "model_id",
    "revision",
    "config_hash",
    "properties",
    "notes",
    "footprint",
    "evidence",
)
#: Columns of the evidence table (one row per chosen tile, every level).
EVIDENCE_COLUMNS: tuple[str, ...] = (
    "answer_id",
    "scene",
    "item_id",
    "question",
    "level",
    "row",
    "col",
    "score",
    "kept_tokens",
    "finest",
    "pixel_x1",
    "pixel_y1",
    "pixel_x2",
    "pixel_y2",
    "geometry",
)
#: Columns of the errors table (one row per failed scene).
ERROR_COLUMNS: tuple[str, ...] = (
    "scene",
    "item_id",
    "datetime",
    "origin",
    "questions",
    "error",
    "message",
    "time",
)

_COUNT_Q = re.compile(r"^\s*(how\s+many|how\s+much|what\s+is\s+the\s+(number|count)|count)\b", re.I)
_YES_NO_Q = re.compile(
    r"^\s*(is|are|was|were|does|do|did|can|could|has|have|had|will|would|should|may|might|must)\b",
    re.I,
)
_NUMBER_WORDS = {w: i for i, w in enumerate([*UNITS, "twenty"])} | {"no": 0, "none": 0}


def answer_id(location: str, item_id: str | None, question: str) -> str:
    """A stable id of one scene × question (the resume key)."""
    raw = f"{location}\n{item_id or ''}\n{question}"
    return hashlib.sha1(raw.encode("utf-8")).hexdigest()[:20]


def config_hash(config: Mapping[str, Any]) -> str:
    """A short hash of a pipeline's ``config_dict()``: equal hashes, equal settings."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def question_type(question: str) -> str:
    """``count``, ``yes/no`` or ``open``, from the question's first words."""
    if _COUNT_Q.match(question):
        return "count"
    if _YES_NO_Q.match(question):
        return "yes/no"
    return "open"


def parse_count(text: str) -> int | None:
    """The first whole number in an answer ("3", "3 ships", "three", "none" → 0)."""
    digits = re.search(r"\d[\d,]*", text)
    if digits:
        return int(digits.group(0).replace(",", ""))
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _NUMBER_WORDS:
            return _NUMBER_WORDS[word]
    return None


def parse_yes_no(text: str) -> bool | None:
    """True for an answer starting with yes/true, False for no/false, else None."""
    word = (re.findall(r"[a-z]+", text.lower()) or [""])[0]
    return True if word in ("yes", "true") else False if word in ("no", "false") else None


def _to_wgs84(geometry: Any, crs: str | None) -> Any:
    return None if crs is None else reproject_geometry(geometry, crs, WGS84)


def answer_row(answer: Answer, ref: SceneRef | None = None) -> dict[str, Any]:
    """The row of ``answer`` (JSON-ready; geometries as GeoJSON mappings in EPSG:4326,
    None for a scene without CRS) plus its ``tiles`` for the evidence table."""
    ref = ref or getattr(answer, "ref", None) or SceneRef(answer.scene, origin=answer.scene)
    ev = answer.evidence
    crs = ev.crs
    footprint = None
    if crs is not None and ev.scene_bounds is not None:
        footprint = _to_wgs84(box(*ev.scene_bounds), crs)
    tiles = []
    finest: list[Polygon] = []
    for tile in ev.tiles:
        geometry = _to_wgs84(tile.geometry, crs)
        if tile.finest and geometry is not None:
            finest.append(geometry)
        x1, y1, x2, y2 = tile.window.to_box()
        tiles.append(
            {
                "level": tile.level,
                "row": tile.row,
                "col": tile.col,
                "score": float(tile.score),
                "kept_tokens": int(tile.kept_tokens),
                "finest": bool(tile.finest),
                "pixel_box": [x1, y1, x2, y2],
                "geometry": None if geometry is None else mapping(geometry),
            }
        )
    cost = answer.cost
    kind = question_type(answer.question)
    config = answer.config or {}
    return {
        "answer_id": answer_id(ref.location, ref.item_id, answer.question),
        "scene": ref.location,
        "item_id": ref.item_id,
        "datetime": ref.datetime,
        "question": answer.question,
        "answer": answer.text,
        "question_type": kind,
        "answer_count": parse_count(answer.text) if kind == "count" else None,
        "answer_yes": parse_yes_no(answer.text) if kind == "yes/no" else None,
        "scene_crs": crs,
        "finest_level": ev.finest_level,
        "evidence_tiles": len(ev.finest_tiles()),
        "vision_tokens": int(cost.llm_vision_tokens),
        "vision_tokens_encoded": int(sum(cost.vision_tokens_encoded.values())),
        "tflops": float(cost.tflops),
        "seconds": float(cost.seconds.get("total", 0.0)),
        "model_id": config.get("model_id"),
        "revision": config.get("revision"),
        "config_hash": config_hash(config),
        "properties": json.dumps(dict(ref.properties), sort_keys=True, default=str),
        "notes": "; ".join(answer.notes),
        "footprint": None if footprint is None else mapping(footprint),
        "evidence": mapping(MultiPolygon(finest)) if finest else None,
        "tiles": tiles,
    }


def _geometry(value: Any) -> Any:
    return None if value is None else shape(value)


def _require_geopandas() -> Any:
    try:
        import geopandas
    except ImportError:
        raise ConfigError(
            "geospatial tables need geopandas: pip install geopandas pyogrio pyarrow"
        ) from None
    return geopandas


def rows_to_geodataframe(rows: Iterable[Mapping[str, Any]]) -> gpd.GeoDataFrame:
    """The answers table from ``answer_row`` rows (columns ``ANSWER_COLUMNS``)."""
    gpd = _require_geopandas()
    import pandas as pd

    records = [{k: row.get(k) for k in ANSWER_COLUMNS} for row in rows]
    frame = pd.DataFrame.from_records(records, columns=list(ANSWER_COLUMNS))
    frame["datetime"] = pd.to_datetime(
        frame["datetime"], utc=True, errors="coerce", format="ISO8601"
    )
    frame["answer_count"] = frame["answer_count"].astype("Int64")
    frame["answer_yes"] = frame["answer_yes"].astype("boolean")
    for column in ("finest_level",):
        frame[column] = frame[column].astype("Int64")
    footprint = gpd.GeoSeries([_geometry(g) for g in frame["footprint"]], crs=WGS84)
    evidence = gpd.GeoSeries([_geometry(g) for g in frame["evidence"]], crs=WGS84)
    frame = frame.drop(columns=["footprint", "evidence"])
    table = gpd.GeoDataFrame(frame, geometry=footprint.values, crs=WGS84)
    table = table.rename_geometry("footprint")
    table["evidence"] = evidence.values
    return table


def evidence_geodataframe(rows: Iterable[Mapping[str, Any]]) -> gpd.GeoDataFrame:
    """The evidence table: every chosen tile of every answer (level, score, geometry)."""
    gpd = _require_geopandas()
    import pandas as pd

    records = []
    for row in rows:
        for tile in row.get("tiles") or []:
            x1, y1, x2, y2 = tile["pixel_box"]
            records.append(
                {
                    "answer_id": row["answer_id"],
                    "scene": row["scene"],
                    "item_id": row.get("item_id"),
                    "question": row["question"],
                    **{k: tile[k] for k in ("level", "row", "col", "score", "kept_tokens")},
                    "finest": tile["finest"],
                    "pixel_x1": x1,
                    "pixel_y1": y1,
                    "pixel_x2": x2,
                    "pixel_y2": y2,
                    "geometry": _geometry(tile.get("geometry")),
                }
            )
    frame = pd.DataFrame.from_records(records, columns=list(EVIDENCE_COLUMNS))
    geometry = gpd.GeoSeries(list(frame.pop("geometry")), crs=WGS84)
    return gpd.GeoDataFrame(frame, geometry=geometry.values, crs=WGS84)


def errors_dataframe(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The errors table: one row per failed scene, with the lrsvqa message."""
    import pandas as pd

    records = []
    for row in rows:
        record = {k: row.get(k) for k in ERROR_COLUMNS}
        questions = row.get("questions") or []
        record["questions"] = "\n".join(questions) if isinstance(questions, list) else questions
        records.append(record)
    return pd.DataFrame.from_records(records, columns=list(ERROR_COLUMNS))


def to_geodataframe(answers: Iterable[Answer]) -> gpd.GeoDataFrame:
    """One row per answer: scene, question, answer, parsed value, footprint and
    finest evidence tiles (EPSG:4326), cost, model and config hash."""
    return rows_to_geodataframe(answer_row(a) for a in answers)


def table_format(path: str | os.PathLike[str]) -> str:
    """``parquet``, ``geojson`` or ``csv`` from the file extension; ConfigError else."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(
            f"{path}: unknown output type {suffix or '(none)'!r}; "
            "use .parquet (GeoParquet), .geojson or .csv"
        )
    return FORMATS[suffix]


def side_table(path: Path, name: str) -> Path:
    """``ships.parquet`` + ``errors`` → ``ships.errors.parquet``."""
    return path.with_name(f"{path.stem}.{name}{path.suffix}")


def _wkt_columns(frame: Any, columns: Sequence[str]) -> Any:
    import pandas as pd

    out = pd.DataFrame(frame.copy())
    for column in columns:
        if column in out:
            out[column] = [None if g is None or g.is_empty else g.wkt for g in out[column]]
    return out


def write_table(frame: Any, path: str | os.PathLike[str]) -> Path:
    """Write a table by extension, atomically (temp file + rename): GeoParquet,
    GeoJSON (the active geometry; other geometry columns as WKT text) or CSV (WKT)."""
    gpd = _require_geopandas()
    path = Path(path)
    kind = table_format(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    geo = isinstance(frame, gpd.GeoDataFrame)
    try:
        if kind == "parquet":
            frame.to_parquet(tmp, index=False)
        elif kind == "csv":
            columns = [c for c in frame.columns if geo and _is_geometry(frame[c])]
            _wkt_columns(frame, columns).to_csv(tmp, index=False)
        else:
            if not geo:
                frame = gpd.GeoDataFrame(frame, geometry=[None] * len(frame), crs=WGS84)
            extra = [
                c for c in frame.columns if c != frame.geometry.name and _is_geometry(frame[c])
            ]
            if extra:
                frame = frame.copy()
                for column in extra:
                    frame[column] = [None if g is None else g.wkt for g in frame[column]]
            frame.to_file(tmp, driver="GeoJSON", engine="pyogrio")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def _is_geometry(series: Any) -> bool:
    return str(getattr(series, "dtype", "")) == "geometry"
