"""``lrsvqa serve`` API against a real uvicorn on 127.0.0.1, with a tiny model.

One server (model loaded once) for the module: answers equal ``Pipeline.ask``, tiles of a
CRS and a no-CRS scene, the bad-input list, a damaged scene, 20 concurrent questions, the
queue limit, the memory bound.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'lrsvqa[serve]'")
import uvicorn

from lrsvqa.io import Window, open_scene

MODEL = "tiny/qwen2_vl"
TOKEN = "s3cret-token-for-tests"


class Client:
    """A tiny HTTP client (raw paths: nothing is normalised before the server sees it)."""

    def __init__(self, port: int, token: str | None = None):
        self.port, self.token = port, token

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        sent = dict(headers or {})
        if self.token and "Authorization" not in sent:
            sent["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            sent.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        status, headers, data = self.request("GET", path, **kw)
        ctype = headers.get("content-type", "")
        return status, json.loads(data) if "json" in ctype else data

    def post(self, path: str, payload: Any, **kw: Any) -> tuple[int, dict[str, str], Any]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        status, headers, data = self.request("POST", path, body=body, **kw)
        return status, headers, json.loads(data) if data else None

    def ask(self, scene: str, question: str, **options: Any) -> dict[str, Any]:
        status, _, data = self.post(
            "/api/ask", {"scene": scene, "question": question, "options": options}
        )
        assert status == 202, data
        return data

    def wait(self, job: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, data = self.get(f"/api/jobs/{job}")
            assert status == 200
            if data["state"] in ("done", "error"):
                return data
            time.sleep(0.05)
        raise AssertionError(f"job {job} did not finish in {timeout} s")


class LiveServer:
    """uvicorn in a thread, on a free loopback port."""

    def __init__(self, app: Any):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def make_root(base: Path) -> Path:
    """Scenes: CRS, no CRS, uint16 without CRS, PNG, damaged; a symlink in and one out."""
    from PIL import Image

    from lrsvqa.testing import make_ship_scene, write_geotiff

    root = base / "root"
    (root / "sub").mkdir(parents=True)
    make_ship_scene(root / "ships.tif", 1024, ships=3)
    make_ship_scene(root / "sub" / "nocrs.tif", 700, ships=2, crs=None)
    write_geotiff(root / "u16.tif", 300, 200, dtype="uint16", crs=None, transform=None)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(root / "photo.png")
    make_ship_scene(root / "damaged.tif", 1024, ships=2)
    data = bytearray((root / "damaged.tif").read_bytes())
    import rasterio

    with rasterio.open(root / "damaged.tif") as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
    data[offset : offset + len(data) // 3] = b"\xff" * (len(data) // 3)  # tiles garbled
    (root / "damaged.tif").write_bytes(bytes(data))
    (root / "notes.txt").write_text("not a raster")
    outside = base / "outside"
    outside.mkdir()
    make_ship_scene(outside / "secret.tif", 256, ships=1)
    os.symlink(outside / "secret.tif", root / "escape.tif")
    os.symlink(root / "ships.tif", root / "sub" / "inside-link.tif")
    return root


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from lrsvqa.cli.ask_cmd import quiet_transformers
    from lrsvqa.pipeline import Pipeline
    from lrsvqa.serve import ServeConfig, create_app

    quiet_transformers()
    base = tmp_path_factory.mktemp("serve")
    root = make_root(base)
    pipeline = Pipeline.from_pretrained(MODEL, max_new_tokens=4)
    config = ServeConfig(
        root=root, allow_urls=("http://127.0.0.1:9/allowed/",), max_queue=32, max_new_tokens=8
    )
    guard = create_app(pipeline, config)
    live = LiveServer(guard)
    # A second app on the same model, with a token: only refused requests reach it.
    locked = LiveServer(create_app(pipeline, ServeConfig(root=root, token=TOKEN)))
    yield {
        "client": Client(live.port),
        "locked": locked,
        "app": guard.app,
        "pipeline": pipeline,
        "root": root,
        "base": base,
    }
    live.stop()
    locked.stop()
    pipeline.close()


# Cost fields that follow the clock, the machine or what earlier questions left in the cache.
VOLATILE_COST = {
    "seconds",
    "peak_rss_mb",
    "cache_hits",
    "vision_tokens_encoded",
    "tiles_encoded",
    "vision_flops",
    "tflops",
    "focus_tokens_run",
    "focus_flops",
    "paper_focus_flops",  # the papers' count of the same focus passes (issue 13)
    "paper_tflops",
}


def _comparable(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer's JSON without the scene path and the volatile cost fields."""
    cost = {k: v for k, v in answer["cost"].items() if k not in VOLATILE_COST}
    return {
        **{k: answer[k] for k in ("text", "question", "evidence", "config", "notes")},
        "cost": cost,
    }


@pytest.mark.parametrize("scene", ["ships.tif", "sub/nocrs.tif"])
def test_ask_equals_pipeline_ask(served: Any, scene: str) -> None:
    from lrsvqa.pipeline import Pipeline

    client = served["client"]
    question = "How many ships are there in this image?"
    job = client.ask(scene, question)
    events_status, _, events = client.request("GET", f"/api/jobs/{job['job']}/events")
    assert events_status == 200
    stages = [
        json.loads(line[len("data: ") :])["stage"]
        for line in events.decode().splitlines()
        if line.startswith("data: ")
    ]
    assert stages[0] == "queued" and stages[-1] == "done" and stages.count("done") == 1
    assert {"pyramid", "encode", "focus", "generate"} <= set(stages)
    status, result = client.get(job["result_url"])
    assert status == 200, result
    base = served["pipeline"]
    with served["app"].state.queue.model_lock:  # the model is the worker's; borrow it
        reference = Pipeline(
            base.adapter,
            focus=base.focus,
            prune=base.prune,
            pyramid=base.pyramid,
            max_new_tokens=base.max_new_tokens,
        )
        expected = reference.ask(served["root"] / scene, question)
        reference.close()
    got = result["answer"]
    assert got["scene"] == scene  # the id, never the server's path
    want = json.loads(json.dumps(expected.to_dict(), default=str))
    assert _comparable(got) == _comparable(want)
    crs = "EPSG:4326" if expected.evidence.crs else "scene"
    assert result["geojson"] == json.loads(json.dumps(expected.to_geojson(crs)))
    assert len(result["geojson"]["features"]) == len(expected.evidence.tiles) > 0
    assert result["heat"] and all(level["tiles"] for level in result["heat"])
    # downloads
    status, _, data = client.request("GET", f"/api/jobs/{job['job']}/overlay.png")
    assert status == 200 and data[:8] == b"\x89PNG\r\n\x1a\n"
    status, geojson = client.get(f"/api/jobs/{job['job']}/evidence.geojson")
    assert status == 200 and geojson == result["geojson"]
    status, heat = client.get(f"/api/jobs/{job['job']}/heat/0.png")
    assert status == 200 and heat[:4] == b"\x89PNG"


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def test_tiles_crs_scene(served: Any) -> None:
    import morecantile

    client = served["client"]
    status, info = client.get("/api/scene?id=ships.tif")
    assert status == 200
    tiles = info["tiles"]
    assert tiles["scheme"] == "mercator" and info["footprint"]["type"] == "Polygon"
    west, south, east, north = tiles["bounds"]
    tms = morecantile.tms.get("WebMercatorQuad")
    centre = tms.tile((west + east) / 2, (south + north) / 2, tiles["maxzoom"])
    status, data = client.get(f"/api/tiles/{centre.z}/{centre.x}/{centre.y}.png?scene=ships.tif")
    assert status == 200
    rgba = _png(data)
    assert rgba.shape == (256, 256, 4)
    assert (rgba[..., 3] == 255).mean() > 0.5  # mostly inside the scene
    assert rgba[..., :3][rgba[..., 3] == 255].std() > 1  # real pixels, not a flat fill
    far = tms.tile(west - 10, south - 10, tiles["maxzoom"])
    status, _ = client.get(f"/api/tiles/{far.z}/{far.x}/{far.y}.png?scene=ships.tif")
    assert status == 204


@pytest.mark.parametrize("scene", ["sub/nocrs.tif", "u16.tif", "photo.png"])
def test_tiles_pixel_view_show_what_the_model_sees(served: Any, scene: str) -> None:
    """No CRS: a pixel-coordinate view whose native-zoom tile is lrsvqa's own read (band
    choice and stretch included), for a GeoTIFF, a uint16 raster and a PNG."""
    client = served["client"]
    status, info = client.get(f"/api/scene?id={scene}")
    assert status == 200 and info["tiles"]["scheme"] == "pixel" and info["footprint"] is None
    z = info["tiles"]["maxzoom"]
    status, data = client.get(f"/api/tiles/{z}/0/0.png?scene={scene}")
    assert status == 200
    rgba = _png(data)
    with open_scene(served["root"] / scene) as opened:
        h, w = min(256, opened.height), min(256, opened.width)
        expected = opened.read(Window(0, 0, w, h))
    assert np.array_equal(rgba[:h, :w, :3], expected)
    assert (rgba[:h, :w, 3] == 255).all()


BAD_REQUESTS: list[tuple[str, str, Any, int, str]] = [
    # (name, method+path, body, status, a word the error must contain)
    ("traversal", "/api/scene?id=../outside/secret.tif", None, 403, ".."),
    ("traversal-encoded", "/api/scene?id=%2e%2e%2foutside%2fsecret.tif", None, 403, ".."),
    (
        "traversal-double-encoded",
        "/api/scene?id=%252e%252e%252foutside%252fsecret.tif",
        None,
        403,
        "..",
    ),
    ("traversal-inner", "/api/scene?id=sub/../../outside/secret.tif", None, 403, ".."),
    ("traversal-backslash", "/api/scene?id=..%5Coutside%5Csecret.tif", None, 403, "/"),
    ("absolute", "/api/scene?id=/etc/passwd", None, 403, "absolute"),
    ("absolute-raster", "ABS", None, 403, "absolute"),
    ("symlink-escape", "/api/scene?id=escape.tif", None, 403, "symlink"),
    ("not-a-raster", "/api/scene?id=notes.txt", None, 403, "raster"),
    ("missing", "/api/scene?id=nope.tif", None, 404, "no such file"),
    ("disallowed-url", "/api/scene?id=http://127.0.0.1:9/other/x.tif", None, 403, "allowed"),
    ("url-traversal", "/api/scene?id=http://127.0.0.1:9/allowed/%2e%2e/x.tif", None, 403, ".."),
    ("url-file-scheme", "/api/scene?id=file:///etc/passwd", None, 403, "http"),
    ("tile-traversal", "/api/tiles/0/0/0.png?scene=../outside/secret.tif", None, 403, ".."),
    ("tile-out-of-range", "/api/tiles/3/9/0.png?scene=ships.tif", None, 422, "tile"),
    ("ask-traversal", "/api/ask", {"scene": "../outside/secret.tif", "question": "q"}, 403, ".."),
    (
        "huge-body",
        "/api/ask",
        b'{"scene": "ships.tif", "question": "' + b"x" * 70_000 + b'"}',
        413,
        "limit",
    ),
    ("non-utf8", "/api/ask", b'{"scene": "ships.tif", "question": "\xff\xfe"}', 422, "body"),
    ("bad-json", "/api/ask", b'{"scene": ', 422, "body"),
    (
        "negative-budget",
        "/api/ask",
        {"scene": "ships.tif", "question": "q", "options": {"budget": -5}},
        422,
        "options.budget",
    ),
    (
        "unknown-selector",
        "/api/ask",
        {"scene": "ships.tif", "question": "q", "options": {"selector": "best"}},
        422,
        "options.selector",
    ),
    (
        "unknown-option",
        "/api/ask",
        {"scene": "ships.tif", "question": "q", "options": {"turbo": True}},
        422,
        "options.turbo",
    ),
    (
        "keep-ratio-range",
        "/api/ask",
        {"scene": "ships.tif", "question": "q", "options": {"keep_ratio": 1.5}},
        422,
        "options.keep_ratio",
    ),
    (
        "question-too-long",
        "/api/ask",
        {"scene": "ships.tif", "question": "x" * 4001},
        422,
        "question",
    ),
    ("question-missing", "/api/ask", {"scene": "ships.tif"}, 422, "question"),
    (
        "bad-bands",
        "/api/ask",
        {"scene": "ships.tif", "question": "q", "options": {"bands": [9]}},
        422,
        "band",
    ),
    (
        "too-many-new-tokens",
        "/api/ask",
        {"scene": "ships.tif", "question": "q", "options": {"max_new_tokens": 100}},
        422,
        "max_new_tokens",
    ),
    ("unknown-job", "/api/jobs/nope/result", None, 404, "no job"),
]


@pytest.mark.parametrize(
    ("name", "path", "body", "status", "word"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_input_is_refused_and_server_stays_healthy(
    served: Any, name: str, path: str, body: Any, status: int, word: str
) -> None:
    client = served["client"]
    if path == "ABS":
        path = f"/api/scene?id={served['base'] / 'outside' / 'secret.tif'}"
    if body is None:
        got, headers, data = client.request("GET", path)
    else:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        got, headers, data = client.request("POST", path, body=raw)
    assert got == status, (name, data[:300])
    assert headers["content-type"].startswith("application/json")
    error = json.loads(data)["error"]
    assert word.lower() in error.lower(), error
    assert "Traceback" not in error
    if str(served["base"]) not in path:  # the server's own paths never leak
        assert str(served["base"]) not in error
    assert len(error.splitlines()) == 1
    assert client.get("/api/health")[0] == 200


def test_token_required_and_checked(served: Any) -> None:
    port = served["locked"].port
    for token, expected in ((None, 401), ("wrong-token-here", 401), (TOKEN, 200)):
        status, _ = Client(port, token).get("/api/scenes")
        assert status == expected, token
    status, headers, _ = Client(port, "Basic " + TOKEN).request(
        "GET", "/api/scenes", headers={"Authorization": "Basic " + TOKEN}
    )
    assert status == 401 and "bearer" in headers["www-authenticate"].lower()
    status, _, data = Client(port).post("/api/ask", {"scene": "ships.tif", "question": "q"})
    assert status == 401 and "token" in data["error"]
    # the page shell is public (it asks for the token); the data is not
    assert Client(port).get("/")[0] == 200
    assert Client(port).get("/static/vendor/leaflet/leaflet.js")[0] == 200
    assert Client(port).get("/api/jobs")[0] == 401


def test_api_docs_load_nothing_from_outside(served: Any) -> None:
    """/docs is Swagger UI from the package's vendored copy: every script, stylesheet and icon
    it names is served here (users may be offline), and /openapi.json lists the API."""
    import re

    client = served["client"]
    status, page = client.get("/docs")
    assert status == 200
    html = page.decode()
    refs = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", html)
    refs += re.findall(r"""url: ?['"]([^'"]+)['"]""", html)
    assert refs and all(ref.startswith("/") for ref in refs), refs
    for ref in refs:
        status, body = client.get(ref)
        assert status == 200 and body, ref
    assert (
        "SwaggerUIBundle"
        in client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js")[1].decode()
    )
    assert "/api/ask" in client.get("/openapi.json")[1]["paths"]


def test_scene_listing_stays_inside_root(served: Any) -> None:
    status, data = served["client"].get("/api/scenes")
    assert status == 200
    ids = {s["id"]: s for s in data["scenes"]}
    assert set(ids) == {
        "ships.tif",
        "sub/nocrs.tif",
        "sub/inside-link.tif",
        "u16.tif",
        "photo.png",
        "damaged.tif",
    }
    assert ids["ships.tif"]["crs"] == "EPSG:32650" and ids["ships.tif"]["footprint"]
    assert ids["sub/nocrs.tif"]["pixel_coordinates"] is True
    assert all(str(served["base"]) not in json.dumps(s) for s in data["scenes"])


def test_damaged_scene_fails_alone(served: Any) -> None:
    client = served["client"]
    bad = client.ask("damaged.tif", "How many ships?")
    good = client.ask("ships.tif", "Is there a ship?")
    failed = client.wait(bad["job"])
    assert failed["state"] == "error"
    assert failed["error"].startswith("damaged.tif: ") and "damaged" in failed["error"]
    assert "\n" not in failed["error"] and str(served["root"]) not in failed["error"]
    status, data = client.get(bad["result_url"])
    assert status == 422 and data["error"] == failed["error"]
    assert client.wait(good["job"])["state"] == "done"


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_twenty_concurrent_asks_answered_once_in_order(served: Any) -> None:
    client = served["client"]
    options = {"selector": "thumbnail", "max_new_tokens": 1}
    client.wait(client.ask("ships.tif", "warm up", **options)["job"])
    before = _rss_mb()
    questions = [f"Question {i}: is there a ship?" for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        created = list(pool.map(lambda q: client.ask("ships.tif", q, **options), questions))
    finished = [client.wait(job["job"]) for job in created]
    assert len({job["job"] for job in created}) == 20
    assert all(job["state"] == "done" for job in finished)
    assert sorted(job["question"] for job in finished) == sorted(questions)
    by_seq = sorted(finished, key=lambda job: job["seq"])
    starts = [job["started"] for job in by_seq]
    assert starts == sorted(starts), "jobs ran out of queue order"
    ends = [job["finished"] for job in by_seq]
    assert all(a <= b for a, b in zip(ends[:-1], starts[1:], strict=True)), "two jobs ran at once"
    _, listing = client.get("/api/jobs")
    ours = [j for j in listing["jobs"] if j["id"] in {c["job"] for c in created}]
    assert len(ours) == 20
    for job in created:
        status, result = client.get(job["result_url"])
        assert status == 200 and result["job"] == job["job"]
    grown = _rss_mb() - before
    assert grown < 150, f"resident memory grew by {grown:.0f} MB over 20 questions"


def test_full_queue_answers_429_and_nothing_hangs(served: Any) -> None:
    client = served["client"]
    queue = served["app"].state.queue
    options = {"selector": "thumbnail", "max_new_tokens": 1}
    old_limit = queue.max_queue
    queue.max_queue = 5
    accepted: list[dict[str, Any]] = []
    refused: list[tuple[int, dict[str, str], Any]] = []
    try:
        with queue.model_lock:  # the worker takes one job, then waits for the model
            first = client.ask("ships.tif", "first", **options)
            deadline = time.time() + 30
            while client.get(f"/api/jobs/{first['job']}")[1]["state"] != "running":
                assert time.time() < deadline
                time.sleep(0.02)

            def post(i: int) -> tuple[int, dict[str, str], Any]:
                return client.post(
                    "/api/ask", {"scene": "ships.tif", "question": f"q{i}", "options": options}
                )

            with ThreadPoolExecutor(20) as pool:
                replies = list(pool.map(post, range(20)))
            for status, headers, data in replies:
                if status == 202:
                    accepted.append(data)
                else:
                    refused.append((status, headers, data))
    finally:
        queue.max_queue = old_limit
    assert len(accepted) == 5 and len(refused) == 15
    for status, headers, data in refused:
        assert status == 429 and int(headers["retry-after"]) >= 1 and "full" in data["error"]
    for job in [first, *accepted]:
        assert client.wait(job["job"], timeout=60)["state"] == "done"
    assert client.get("/api/info")[1]["queue"]["waiting"] == 0


def test_allowed_url_scene_and_nothing_else_fetched(served: Any, http_server: Any) -> None:
    """A URL under --allow-url is a scene like any other; one outside is never fetched."""
    import morecantile

    from lrsvqa.serve import ServeConfig, create_app
    from lrsvqa.testing import make_ship_scene

    base_url, www, seen = http_server
    (www / "allowed").mkdir()
    make_ship_scene(www / "allowed" / "remote.tif", 512, ships=1)
    make_ship_scene(www / "private.tif", 256, ships=1)
    config = ServeConfig(root=served["root"], allow_urls=(f"{base_url}/allowed/",))
    live = LiveServer(create_app(served["pipeline"], config))
    try:
        client = Client(live.port)
        url = f"{base_url}/allowed/remote.tif"
        status, info = client.get(f"/api/scene?id={url}")
        assert status == 200 and info["crs"] == "EPSG:32650" and info["remote"] is True
        west, south, east, north = info["tiles"]["bounds"]
        tile = morecantile.tms.get("WebMercatorQuad").tile(
            (west + east) / 2, (south + north) / 2, info["tiles"]["maxzoom"]
        )
        status, png = client.get(f"/api/tiles/{tile.z}/{tile.x}/{tile.y}.png?scene={url}")
        assert status == 200 and png[:4] == b"\x89PNG"
        job = client.ask(url, "Is there a ship?", selector="thumbnail", max_new_tokens=1)
        assert client.wait(job["job"])["state"] == "done"
        fetched = len(seen)
        for bad in (f"{base_url}/private.tif", f"{base_url}/allowed/../private.tif"):
            status, data = client.get(f"/api/scene?id={bad}")
            assert status == 403, data
        assert len(seen) == fetched  # refused URLs were never requested
    finally:
        live.stop()
