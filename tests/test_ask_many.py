"""``lrsvqa ask-many``: sources, tables, resume, refusal, errors, and the Python API.

The model is the stub adapter behind the real pipeline (tests/ask_many_fakes.py):
every path from scene to table runs, only the neural network is replaced.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.warp import transform_bounds

import lrsvqa
from lrsvqa.bench.catalog import run_dir
from lrsvqa.cli import ask_many_cmd
from lrsvqa.cli import main as cli_main
from lrsvqa.errors import ConfigError
from lrsvqa.pipeline import Pipeline
from lrsvqa.pipeline.sources import expand_sources
from lrsvqa.pipeline.tables import ANSWER_COLUMNS, parse_count, parse_yes_no, question_type
from lrsvqa.testing.stub import StubAdapter
from tests.ask_many_fakes import make_scenes, stub_answerer

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ("How many ships are there?", "Is there a ship near the pier?")
# What differs between two runs of the same work: wall time.
TIMING = ["seconds"]


@pytest.fixture(autouse=True)
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ask_many_cmd, "make_answerer", stub_answerer)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)


def ask_many(
    capsys: pytest.CaptureFixture[str], sources: list[Any], out: Path, *extra: str
) -> tuple[int, str, str]:
    args = ["ask-many", *map(str, sources)]
    for q in QUESTIONS:
        args += ["-q", q]
    rc = cli_main.main([*args, "--out", str(out), "--model", "stub", *extra])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def table(path: Path) -> pd.DataFrame:
    return pd.DataFrame(gpd.read_parquet(path).drop(columns=TIMING))


def test_folder_to_geoparquet_geojson_csv(tmp_path, capsys) -> None:
    scenes = make_scenes(tmp_path / "scenes", 5, no_crs=1)
    results = {}
    for ext in ("parquet", "geojson", "csv"):
        out = tmp_path / f"ships.{ext}"
        rc, stdout, err = ask_many(capsys, [tmp_path / "scenes"], out, "--json")
        assert rc == 0, err
        assert json.loads(stdout)["done"] == 10
        results[ext] = out

    parquet = gpd.read_parquet(results["parquet"])
    assert parquet.crs.to_epsg() == 4326 and parquet.geometry.name == "footprint"
    assert parquet["evidence"].crs.to_epsg() == 4326
    assert list(parquet.columns) == list(ANSWER_COLUMNS)
    assert len(parquet) == 10
    assert list(parquet["scene"]) == [str(p) for p in scenes for _ in QUESTIONS]
    assert list(parquet["question"]) == list(QUESTIONS) * 5
    assert set(parquet["model_id"]) == {"stub"} and set(parquet["revision"]) == {"stub-1"}
    assert parquet["config_hash"].nunique() == 1 and len(parquet["config_hash"][0]) == 16
    assert (parquet["vision_tokens"] > 0).all() and (parquet["tflops"] > 0).all()
    # the stub answers a number: counts parse to integers, yes/no questions stay open
    counts = parquet[parquet["question_type"] == "count"]
    assert list(counts["answer_count"]) == [int(a) for a in counts["answer"]]
    assert parquet[parquet["question_type"] == "yes/no"]["answer_yes"].isna().all()

    for path, row in zip(
        scenes, parquet[parquet["question"] == QUESTIONS[0]].itertuples(), strict=True
    ):
        with rasterio.open(path) as src:
            if src.crs is None:  # no CRS: no map geometry, said so by a null scene_crs
                assert row.footprint is None and row.evidence is None and pd.isna(row.scene_crs)
                continue
            expected = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
        assert row.scene_crs == src.crs.to_string()
        assert row.footprint.bounds == pytest.approx(expected, abs=1e-9)
        # the finest evidence tiles lie inside the scene's footprint
        assert (
            row.evidence.geom_type == "MultiPolygon"
            and len(row.evidence.geoms) == row.evidence_tiles
        )
        assert row.footprint.buffer(1e-9).contains(row.evidence)

    info = pyogrio.read_info(results["geojson"])
    assert info["features"] == 10 and info["crs"] == "EPSG:4326"
    geojson = pyogrio.read_dataframe(results["geojson"])
    assert list(geojson["answer"]) == list(parquet["answer"])
    # GeoJSON holds one geometry: the evidence MultiPolygon travels as WKT text
    with_crs = parquet["evidence"].notna()
    for wkt, geom in zip(geojson["evidence"][with_crs], parquet["evidence"][with_crs], strict=True):
        assert shapely.from_wkt(wkt).equals_exact(geom, 1e-9)

    csv = pd.read_csv(results["csv"])
    assert list(csv["answer"].astype(str)) == list(parquet["answer"])
    for wkt, geom in zip(csv["footprint"], parquet["footprint"], strict=True):
        if geom is None:
            assert pd.isna(wkt)
        else:
            assert shapely.from_wkt(wkt).equals_exact(geom, 1e-9)


def test_sources_files_glob_list_with_missing_path_and_bad_url(
    tmp_path, capsys, http_server
) -> None:
    base, www, _ = http_server
    scenes = make_scenes(tmp_path / "a", 4)
    (www / "remote.tif").write_bytes(scenes[0].read_bytes())
    listing = tmp_path / "list.txt"
    listing.write_text(
        "# scenes to ask about\n"
        f"{scenes[2]}\n"
        "a/scene03.tif\n"  # relative to the list file
        "a/gone.tif\n"  # missing: an error row
        f"{base}/nothing-here.tif\n"  # a URL that does not answer with a raster
        f"{base}/remote.tif\n\n"
    )
    glob = str(tmp_path / "a" / "scene0[01].tif")
    out = tmp_path / "mixed.parquet"
    rc, _stdout, err = ask_many(capsys, [scenes[1], glob, listing], out, "--json")
    assert rc == 1  # some scenes failed; the others are answered
    expected = [scenes[1], scenes[0], scenes[2], scenes[3]]
    got = gpd.read_parquet(out)
    assert (
        list(got["scene"])
        == [str(p) for p in expected for _ in QUESTIONS] + [f"{base}/remote.tif"] * 2
    )
    # the remote copy of scene 0 answers as the local file does
    local, remote = got.iloc[2:4], got.iloc[-2:]
    assert list(local["answer"]) == list(remote["answer"])
    assert local["footprint"].iloc[0].equals_exact(remote["footprint"].iloc[0], 1e-12)
    errors = pd.read_parquet(tmp_path / "mixed.errors.parquet")
    assert list(errors["scene"]) == [str(tmp_path / "a" / "gone.tif"), f"{base}/nothing-here.tif"]
    assert "no such file" in errors["message"][0] and errors["error"][0] == "SceneOpenError"
    assert errors["message"][1].startswith(f"{base}/nothing-here.tif")
    assert all(e.count("\n") == 1 for e in errors["questions"])  # both questions listed

    for bad, message in (
        (tmp_path / "nope", "no such file or folder"),
        (str(tmp_path / "*.jp2"), "matches no files"),
    ):
        rc, _, err = ask_many(capsys, [bad], tmp_path / "x.parquet")
        assert rc == 2 and err.startswith("lrsvqa: error: ") and message in err
        assert err.count("\n") == 1
    rc, _, err = ask_many(capsys, [scenes[0]], tmp_path / "x.xlsx")
    assert rc == 2 and "use .parquet (GeoParquet), .geojson or .csv" in err


def write_stac(tmp_path: Path, scenes: list[Path]) -> tuple[Path, Path]:
    from datetime import UTC, datetime

    import pystac

    items = []
    for i, scene in enumerate(scenes):
        with rasterio.open(scene) as src:
            bbox = list(transform_bounds(src.crs, "EPSG:4326", *src.bounds))
        item = pystac.Item(
            id=f"acq-{i}",
            geometry=shapely.geometry.mapping(shapely.box(*bbox)),
            bbox=bbox,
            datetime=datetime(2024, 5, 1 + i, 10, 30, tzinfo=UTC),
            properties={"eo:cloud_cover": 10 * i, "platform": "test-sat"},
        )
        name = "visual" if i < len(scenes) - 1 else "thumbnail"  # the last lacks 'visual'
        item.add_asset(name, pystac.Asset(href=f"./{scene.name}", media_type=pystac.MediaType.COG))
        item.add_asset("metadata", pystac.Asset(href="./meta.xml"))
        items.append(item)
    collection = tmp_path / "scenes" / "items.json"
    collection.write_text(json.dumps(pystac.ItemCollection(items).to_dict(transform_hrefs=False)))
    catalog = pystac.Catalog("cat", "a test catalogue")
    for item in items[:2]:
        catalog.add_item(item.clone())
    catalog.normalize_hrefs(str(tmp_path / "catalog"))
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    for item in items[:2]:  # the catalogue's items point at the scenes by absolute path
        saved = next(catalog.get_items(item.id, recursive=True))
        saved.assets["visual"].href = str(
            tmp_path / "scenes" / Path(item.assets["visual"].href).name
        )
        saved.save_object()
    return collection, tmp_path / "catalog" / "catalog.json"


def test_stac_item_collection_and_catalog(tmp_path, capsys) -> None:
    scenes = make_scenes(tmp_path / "scenes", 3)
    collection, catalog = write_stac(tmp_path, scenes)
    out = tmp_path / "stac.parquet"
    rc, _, err = ask_many(capsys, [collection], out)
    assert rc == 1, err
    got = gpd.read_parquet(out)
    assert list(got["item_id"]) == ["acq-0", "acq-0", "acq-1", "acq-1"]
    assert list(got["scene"]) == [str(scenes[0])] * 2 + [str(scenes[1])] * 2
    assert str(got["datetime"].iloc[2]) == "2024-05-02 10:30:00+00:00"
    assert json.loads(got["properties"].iloc[2])["eo:cloud_cover"] == 10
    errors = pd.read_parquet(tmp_path / "stac.errors.parquet")
    assert list(errors["item_id"]) == ["acq-2"]
    assert "no asset 'visual' (it has: metadata, thumbnail)" in errors["message"][0]
    # --asset chooses another asset; a catalogue is walked recursively
    refs = expand_sources([str(collection)], asset="thumbnail")
    assert [r.problem is None for r in refs] == [False, False, True]
    refs = expand_sources([str(catalog)])
    assert sorted(r.item_id or "" for r in refs) == ["acq-0", "acq-1"]
    assert {r.location for r in refs} == {str(scenes[0]), str(scenes[1])}


def test_python_api(tmp_path) -> None:
    scenes = make_scenes(tmp_path / "scenes", 3, damaged=1)
    pipeline = Pipeline(StubAdapter())
    answers = list(pipeline.ask_many(tmp_path / "scenes", QUESTIONS, on_error="skip"))
    assert [(Path(a.scene).name, a.question) for a in answers] == [
        (p.name, q) for p in scenes[:2] for q in QUESTIONS
    ]
    table = lrsvqa.to_geodataframe(answers)
    assert table.crs.to_epsg() == 4326 and len(table) == 4
    assert list(table["answer"]) == [a.text for a in answers]
    # the same answers asked one by one give the same table
    fresh = Pipeline(StubAdapter())
    alone = lrsvqa.to_geodataframe([fresh.ask(str(p), q) for p in scenes[:2] for q in QUESTIONS])
    pd.testing.assert_frame_equal(
        pd.DataFrame(table.drop(columns=TIMING)), pd.DataFrame(alone.drop(columns=TIMING))
    )
    failures = [r for r in pipeline.ask_many([scenes[2]], QUESTIONS, on_error="yield")]
    assert len(failures) == 1 and failures[0].questions == QUESTIONS
    with pytest.raises(lrsvqa.SceneOpenError):
        list(pipeline.ask_many([scenes[2]], QUESTIONS))
    with pytest.raises(ConfigError, match="question is empty"):
        pipeline.ask_many(scenes[:1], ["  "])

    evidence = answers[0].evidence
    in_scene = evidence.to_geodataframe()
    lonlat = evidence.to_geodataframe(crs="EPSG:4326")
    assert in_scene.crs == rasterio.open(scenes[0]).crs and lonlat.crs.to_epsg() == 4326
    assert len(in_scene) == len(evidence.tiles) and list(in_scene["level"]) == [
        t.level for t in evidence.tiles
    ]
    assert lonlat.geometry.iloc[0].equals_exact(
        shapely.geometry.shape(answers[0].to_geojson("EPSG:4326")["features"][0]["geometry"]), 1e-12
    )


def test_question_types_and_parsing() -> None:
    assert question_type("How many ships are in the harbour?") == "count"
    assert question_type("What is the number of planes?") == "count"
    assert question_type("Is there a bridge?") == "yes/no"
    assert question_type("Are the ships moving?") == "yes/no"
    assert question_type("What colour is the roof?") == "open"
    assert [parse_count(t) for t in ("3", "12 ships", "1,204", "three", "None", "many")] == [
        3,
        12,
        1204,
        3,
        0,
        None,
    ]
    assert [parse_yes_no(t) for t in ("Yes.", "no", "True", "maybe", "")] == [
        True,
        False,
        True,
        None,
        None,
    ]


def test_evidence_table(tmp_path, capsys) -> None:
    make_scenes(tmp_path / "scenes", 2)
    out = tmp_path / "ev.parquet"
    rc, _, err = ask_many(capsys, [tmp_path / "scenes"], out, "--evidence-table")
    assert rc == 0, err
    answers = gpd.read_parquet(out)
    tiles = gpd.read_parquet(tmp_path / "ev.evidence.parquet")
    assert tiles.crs.to_epsg() == 4326
    assert set(tiles["answer_id"]) == set(answers["answer_id"])
    finest = tiles[tiles["finest"]].groupby("answer_id").size()
    assert dict(finest) == dict(zip(answers["answer_id"], answers["evidence_tiles"], strict=True))
    assert tiles["level"].min() == 0 and (tiles["score"] >= 0).all()
    assert (tiles["pixel_x2"] > tiles["pixel_x1"]).all()


def test_rerun_skips_done_and_changed_settings_are_refused(tmp_path, capsys, monkeypatch) -> None:
    scenes = make_scenes(tmp_path / "scenes", 3)
    out = tmp_path / "r.parquet"
    assert ask_many(capsys, scenes[:2], out)[0] == 0
    first = table(out)
    asked: list[str] = []

    def counting(options: Any) -> Any:
        answerer = stub_answerer(options)
        ask = answerer.ask
        answerer.ask = lambda s, q, **kw: asked.append(s) or ask(s, q, **kw)  # type: ignore[method-assign]
        return answerer

    monkeypatch.setattr(ask_many_cmd, "make_answerer", counting)
    rc, stdout, _ = ask_many(capsys, scenes, out, "--json")
    assert rc == 0 and json.loads(stdout)["answered"] == 2
    assert asked == [str(scenes[2])] * 2
    both = table(out)
    pd.testing.assert_frame_equal(both.iloc[:4], first)
    monkeypatch.setattr(ask_many_cmd, "make_answerer", lambda o: pytest.fail("model built"))
    rc, stdout, _ = ask_many(capsys, scenes, out, "--json")
    assert rc == 0 and json.loads(stdout)["answered"] == 0
    for extra in (["--keep-ratio", "0.5"], ["--selector", "all"], ["--asset", "red"]):
        rc, _, err = ask_many(capsys, scenes, out, *extra)
        assert rc == 2 and "holds a run with other settings" in err and "new --out" in err, extra
    assert len(gpd.read_parquet(out)) == 6


def test_kill_9_then_resume_gives_the_uninterrupted_table(tmp_path) -> None:
    """The acceptance run, smaller: 12 scenes (3 damaged, 2 without CRS), two questions,
    a kill -9 at a seeded moment, a rerun: 24 rows minus the damaged scenes' 6."""
    make_scenes(tmp_path / "scenes", 12, damaged=3, no_crs=2)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(var, None)

    def command(out: Path, model: str) -> list[str]:
        args = [sys.executable, "-m", "tests.ask_many_fakes", "ask-many", str(tmp_path / "scenes")]
        for q in QUESTIONS:
            args += ["-q", q]
        return [*args, "--out", str(out), "--model", model, "--json"]

    out = tmp_path / "killed.parquet"
    log = run_dir(out) / "answers.jsonl"
    rng = random.Random(18)
    kill_after = rng.randint(2, 14)
    proc = subprocess.Popen(command(out, "stub/slow"), cwd=ROOT, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and log.read_bytes().count(b"\n") >= kill_after:
            time.sleep(rng.uniform(0, 0.05))
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    assert kill_after <= log.read_bytes().count(b"\n") < 18
    assert not out.exists()  # tables are written when the run ends

    # the rerun and the uninterrupted reference run in this process (same code, no startup)
    rc, stdout, err = ask_many_in_process(tmp_path / "scenes", out, "stub/slow")
    assert rc == 1, err  # 1: some scenes failed
    summary = json.loads(stdout)
    assert summary["done"] == 18 and summary["answered"] < 18 and summary["failed_scenes"] == 3
    got = gpd.read_parquet(out)
    assert len(got) == 18 and got["answer_id"].is_unique
    assert got["scene_crs"].isna().sum() == 4  # 2 scenes without CRS, 2 questions each
    errors = pd.read_parquet(tmp_path / "killed.errors.parquet")
    assert sorted(Path(s).name for s in errors["scene"]) == [
        "scene09.tif",
        "scene10.tif",
        "scene11.tif",
    ]
    ids = [json.loads(line)["question_id"] for line in log.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 18

    once = tmp_path / "once.parquet"
    assert ask_many_in_process(tmp_path / "scenes", once, "stub")[0] == 1
    pd.testing.assert_frame_equal(table(out), table(once))


def ask_many_in_process(source: Path, out: Path, model: str) -> tuple[int, str, str]:
    import contextlib
    import io

    args = ["ask-many", str(source)]
    for q in QUESTIONS:
        args += ["-q", q]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = cli_main.main([*args, "--out", str(out), "--model", model, "--json"])
    return rc, stdout.getvalue(), stderr.getvalue()


def test_unusable_device_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    import torch

    make_scenes(tmp_path / "s", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc, _, err = ask_many(capsys, [tmp_path / "s"], tmp_path / "d.parquet", "--device", "cuda:1")
    assert rc == 2 and err.count("\n") == 1
    assert "--device cuda:1: CUDA is not available here" in err
    rc, _, err = ask_many(capsys, [tmp_path / "s"], tmp_path / "d.parquet", "--device", "tpu")
    assert rc == 2 and "--device 'tpu'" in err


def test_resolve_device_auto_is_cuda_only_when_usable(monkeypatch) -> None:
    import torch

    from lrsvqa.bench.shard import cpu_threads, resolve_device

    cores = len(os.sched_getaffinity(0))
    threads = torch.get_num_threads()
    try:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
        assert resolve_device("auto", {}) == "cpu"
        rank = {"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
        torch.set_num_threads(1)  # what torchrun's OMP_NUM_THREADS=1 gives every rank
        assert resolve_device("auto", rank) == "cpu"
        assert torch.get_num_threads() == cpu_threads(rank) == max(1, cores // 2)
        assert cpu_threads({"LOCAL_WORLD_SIZE": str(4 * cores)}) == 1
        with pytest.raises(ConfigError, match="CUDA is not available here"):
            resolve_device("cuda", rank)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
        assert resolve_device("auto", {}) == "cuda"
        assert resolve_device("auto", {"LOCAL_RANK": "1"}) == "cuda:1"
        assert resolve_device("auto", {"LOCAL_RANK": "3"}) == "cuda:1"  # 2 ranks per GPU
        assert resolve_device("cuda:1", {}) == "cuda:1"
        with pytest.raises(ConfigError, match=r"has 2 CUDA device\(s\)"):
            resolve_device("cuda:2", {})
        with pytest.raises(ConfigError, match="unknown device"):
            resolve_device("gpu0", {})
    finally:
        torch.set_num_threads(threads)
