"""Raster I/O: every kind of input reads to uint8 RGB; bad input gives LrsvqaError."""

from __future__ import annotations

import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp

import lrsvqa
from lrsvqa.io import Window, open_scene
from lrsvqa.testing import expected_values, make_ship_scene, write_geotiff


def _check_rgb(array: np.ndarray, shape: tuple[int, int]) -> None:
    assert array.dtype == np.uint8
    assert array.shape == (*shape, 3)


# -- the real sample files ------------------------------------------------------------


def test_rgb_byte_metadata_and_read(shared_data: Path) -> None:
    with open_scene(shared_data / "RGB.byte.tif") as scene:
        assert (scene.width, scene.height, scene.count) == (791, 718, 3)
        assert scene.crs.to_epsg() == 32618
        assert scene.bands == (1, 2, 3)
        full = scene.read(Window(0, 0, 791, 718))
        _check_rgb(full, (718, 791))
        with rasterio.open(shared_data / "RGB.byte.tif") as src:
            raw = np.moveaxis(src.read(), 0, -1)
        np.testing.assert_array_equal(full, raw)  # uint8 passes through unchanged


def test_rgba_uint16_uses_colour_interpretation(shared_data: Path) -> None:
    with open_scene(shared_data / "RGBA.uint16.tif") as scene:
        assert scene.bands == (3, 2, 1)  # the file is blue, green, red, alpha
        image = scene.read(Window(0, 0, scene.width, scene.height), (100, 150))
        _check_rgb(image, (100, 150))
        # Its colour bands are constant (10000): a constant band maps to 0, not NaN.
        assert all(s.constant for s in scene.stretch())
        assert image.max() == 0


def test_cogeo_overviews_are_used(shared_data: Path) -> None:
    with open_scene(shared_data / "cogeo.tif") as scene:
        assert scene.overview_factors == [2, 4, 8, 16, 32, 64]
        plan = scene.plan(Window(0, 0, 1024, 1024), (128, 128))
        assert plan.factor == 8.0 and plan.overview_level == 2
        assert scene.plan(Window(0, 0, 1024, 1024), (1024, 1024)).overview_level is None
        # A factor-3 decimation must use the factor-2 overview, never the factor-4 one.
        assert scene.plan(Window(0, 0, 768, 768), (256, 256)).factor == 2.0
        coarse = scene.read(Window(0, 0, 1024, 1024), (128, 128))
        with rasterio.open(shared_data / "cogeo.tif", overview_level=2) as overview:
            np.testing.assert_array_equal(coarse, np.moveaxis(overview.read(), 0, -1))
        fine = scene.read(Window(0, 0, 1024, 1024))
        small = fine.reshape(128, 8, 128, 8, 3).mean(axis=(1, 3))
        assert np.corrcoef(coarse.ravel(), small.ravel())[0, 1] > 0.8  # the same picture


def test_corrupt_file_fails_at_read_time(shared_data: Path) -> None:
    with open_scene(shared_data / "corrupt.tif") as scene:
        scene.read(Window(0, 0, 256, 256))  # the intact part reads
        with pytest.raises(lrsvqa.RasterReadError, match=r"corrupt\.tif.*damaged"):
            scene.read(Window(512, 512, 512, 512))


# -- generated files --------------------------------------------------------------------


def test_native_read_is_exact_and_pads_past_the_edge(geotiff) -> None:
    path = geotiff(300, 200, blocksize=64)
    with open_scene(path) as scene:
        tile = scene.read(Window(250, 150, 100, 100))
        expected = np.stack([expected_values(250, 150, 50, 50, b) for b in range(3)], -1)
        np.testing.assert_array_equal(tile[:50, :50], expected.astype(np.uint8))
        assert tile[50:].max() == 0 and tile[:, 50:].max() == 0
        assert scene.read(Window(1000, 1000, 10, 10)).max() == 0  # entirely outside


@pytest.mark.parametrize(
    ("dtype", "count", "nodata"),
    [("uint16", 4, None), ("int16", 3, -9999), ("float32", 3, float("nan")), ("float32", 1, None)],
)
def test_non_uint8_is_stretched(geotiff, dtype: str, count: int, nodata: float | None) -> None:
    def fill(x0: int, y0: int, w: int, h: int, band: int) -> np.ndarray:
        values = expected_values(x0, y0, w, h, band) * 100 - 5000
        if nodata is not None:
            values[:, :5] = nodata  # the left columns are nodata
        return values

    path = geotiff(120, 80, dtype=dtype, count=count, nodata=nodata, fill=fill, tiled=False)
    with open_scene(path) as scene:
        image = scene.read(Window(0, 0, 120, 80))
        _check_rgb(image, (80, 120))
        if nodata is not None:
            assert image[:, :5].max() == 0
        assert image[:, 5:].max() == 255 and image[:, 5:].min() == 0  # 2-98 % stretch
        if count == 1:
            assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_all_nodata_and_constant_bands_give_zero(geotiff) -> None:
    def fill(x0: int, y0: int, w: int, h: int, band: int) -> np.ndarray:
        return np.full((h, w), np.nan if band == 0 else 7.0)

    path = geotiff(64, 48, dtype="float32", nodata=float("nan"), fill=fill)
    with open_scene(path) as scene:
        image = scene.read(Window(0, 0, 64, 48))
        assert image.max() == 0
        assert not np.isnan(image.astype(float)).any()


def test_two_bands_read_as_grey(geotiff) -> None:
    with open_scene(geotiff(50, 40, count=2)) as scene:
        assert scene.bands == (1,)
        image = scene.read(Window(0, 0, 50, 40))
        np.testing.assert_array_equal(
            image[..., 0], expected_values(0, 0, 50, 40, 0).astype(np.uint8)
        )


def test_band_override_and_bad_bands(geotiff) -> None:
    path = geotiff(60, 40, count=4, colorinterp=[ColorInterp.gray] * 4)
    with open_scene(path, bands=(4, 3, 2)) as scene:
        image = scene.read(Window(0, 0, 60, 40))
        np.testing.assert_array_equal(
            image[..., 0], expected_values(0, 0, 60, 40, 3).astype(np.uint8)
        )
    with pytest.raises(lrsvqa.BandError, match=r"1\.\.4"):
        open_scene(path, bands=(5, 3, 2))
    with pytest.raises(lrsvqa.BandError):
        open_scene(path, bands=(1, 2))


def test_tiny_image_and_rotated_transform(geotiff) -> None:
    rotated = Affine.rotation(30) * Affine.scale(2, -2)
    path = geotiff(40, 30, transform=Affine.translation(1000, 2000) * rotated)
    with open_scene(path) as scene:
        assert scene.info().rotated
        _check_rgb(scene.read(Window(0, 0, 448, 448), (448, 448)), (448, 448))


def test_png_without_georeferencing(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "plain.png"
    Image.fromarray(np.full((30, 50, 3), 200, np.uint8)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with open_scene(path) as scene:
            assert scene.crs is None and scene.read_mode == "memory"
            image = scene.read(Window(0, 0, 50, 30), (15, 25))
            assert image.shape == (15, 25, 3) and (image == 200).all()


def test_big_scene_without_overviews_warns_once(tmp_path: Path) -> None:
    path = tmp_path / "big.tif"
    profile = dict(
        driver="GTiff",
        width=5000,
        height=4000,
        count=3,
        dtype="uint8",
        tiled=True,
        blockxsize=256,
        blockysize=256,
        SPARSE_OK="TRUE",
    )
    with rasterio.open(path, "w", **profile):
        pass
    with pytest.warns(lrsvqa.NoOverviewsWarning, match="lrsvqa convert") as record:
        scene = open_scene(path)
    assert len([w for w in record if issubclass(w.category, lrsvqa.NoOverviewsWarning)]) == 1
    scene.close()


# -- limits and bad input -------------------------------------------------------------------


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width x height; the pixel data is missing."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def test_200k_header_is_refused_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "huge.tif"
    profile = dict(
        driver="GTiff",
        width=200_000,
        height=200_000,
        count=3,
        dtype="uint8",
        tiled=False,
        SPARSE_OK="TRUE",
        BIGTIFF="YES",
    )
    with rasterio.open(path, "w", **profile):
        pass
    with pytest.raises(lrsvqa.SceneTooLargeError, match="lrsvqa convert"):
        open_scene(path)
    with pytest.raises(lrsvqa.SceneTooLargeError, match="200000 x 200000"):
        open_scene(_png_header(tmp_path / "huge.png", 200_000, 200_000))


def test_png_over_the_pixel_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(path)
    monkeypatch.setenv("LRSVQA_MAX_PIXELS", "5000")
    with pytest.raises(lrsvqa.SceneTooLargeError, match="LRSVQA_MAX_PIXELS"):
        open_scene(path)
    monkeypatch.setenv("LRSVQA_MAX_PIXELS", "lots")
    with pytest.raises(lrsvqa.ConfigError, match="LRSVQA_MAX_PIXELS"):
        open_scene(path)


def _truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def bad_inputs(tmp_path: Path, shared_data: Path, geotiff) -> dict[str, tuple[Path, type]]:
    empty = tmp_path / "empty.tif"
    empty.touch()
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster\n")
    truncated = _truncated(geotiff(512, 512, name="trunc.tif", compress=None, blocksize=128))
    # Cut before the overviews' TIFF directories: GDAL opens the file and fails only when
    # the bands' metadata is read.
    headless = make_ship_scene(tmp_path / "headless.tif", 2048).path
    headless.write_bytes(headless.read_bytes()[:3000])
    return {
        "missing": (tmp_path / "nope.tif", lrsvqa.SceneOpenError),
        "empty": (empty, lrsvqa.SceneOpenError),
        "text": (text, lrsvqa.SceneOpenError),
        "truncated": (truncated, lrsvqa.RasterReadError),
        "damaged directory": (headless, lrsvqa.SceneOpenError),
    }


def test_bad_files_raise_lrsvqa_errors(tmp_path: Path, shared_data: Path, geotiff) -> None:
    for name, (path, error) in bad_inputs(tmp_path, shared_data, geotiff).items():
        with pytest.raises(error, match=str(path.name)) as info, open_scene(path) as scene:
            scene.read(Window(0, 0, scene.width, scene.height))
        assert isinstance(info.value, lrsvqa.LrsvqaError), name
        assert isinstance(info.value, OSError), name


# -- remote reads -----------------------------------------------------------------------------


def test_http_range_reads(http_server, shared_data: Path) -> None:
    base, root, seen = http_server
    shutil.copy(shared_data / "cogeo.tif", root / "cogeo.tif")
    with open_scene(shared_data / "cogeo.tif") as local, open_scene(f"{base}/cogeo.tif") as remote:
        assert (remote.width, remote.height) == (1024, 1024)
        assert remote.overview_factors == local.overview_factors
        window = Window(100, 200, 300, 300)
        np.testing.assert_array_equal(remote.read(window), local.read(window))
        np.testing.assert_array_equal(
            remote.read(Window(0, 0, 1024, 1024), (64, 64)),
            local.read(Window(0, 0, 1024, 1024), (64, 64)),
        )
    assert any(r.startswith("bytes=") for r in seen)  # ranges, not whole-file downloads
    assert "full" not in seen
    with pytest.raises(lrsvqa.SceneOpenError, match=r"missing\.tif"):
        open_scene(f"{base}/missing.tif")


def test_windowed_read_of_a_large_remote_cog_fetches_a_small_fraction(
    http_server, tmp_path: Path
) -> None:
    """A 2,048 px COG of incompressible pixels over HTTP: a 300 px window reads the same
    pixels as the local file for a small fraction of the file's bytes; the test server
    answers multi-range requests as multipart/byteranges, as a real server does."""
    import urllib.request
    from email.parser import BytesParser

    from lrsvqa.io.convert import convert_to_cog

    def noise(x0: int, y0: int, w: int, h: int, band: int) -> np.ndarray:
        rng = np.random.default_rng([x0, y0, band])
        return rng.integers(0, 256, (h, w)).astype(np.float64)

    source = write_geotiff(tmp_path / "src.tif", 2048, 2048, blocksize=512, fill=noise)
    path = http_server[1] / "big.tif"
    convert_to_cog(source, path)
    base, _, seen = http_server
    size = path.stat().st_size
    assert size > 10_000_000  # incompressible: ~12 MB
    window = Window(600, 1100, 300, 300)  # inside one 512 px tile of 16 at full resolution
    with open_scene(f"{base}/big.tif") as remote:
        seen.clear()
        seen.bytes_sent = 0
        got = remote.read(window)
    with open_scene(path) as local:
        np.testing.assert_array_equal(got, local.read(window))
    assert seen and "full" not in seen
    assert 512 * 512 * 3 <= seen.bytes_sent < 0.08 * size, (seen.bytes_sent, size)
    # Two ranges in one request come back as two parts, each with its own Content-Range.
    request = urllib.request.Request(f"{base}/big.tif", headers={"Range": "bytes=0-9,100-119"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 206
        kind = response.headers["Content-Type"]
        body = response.read()
    message = BytesParser().parsebytes(b"Content-Type: " + kind.encode() + b"\r\n\r\n" + body)
    parts = message.get_payload()
    data = path.read_bytes()
    assert [p["Content-Range"] for p in parts] == [f"bytes 0-9/{size}", f"bytes 100-119/{size}"]
    assert [p.get_payload(decode=True) for p in parts] == [data[0:10], data[100:120]]
