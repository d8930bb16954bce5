"""`lrsvqa serve` overhead: questions through HTTP vs `Pipeline.ask`, tile latency, memory.

    python benchmarks/bench_serve.py [--questions 20] [--size 4096] [--model tiny/qwen2_vl]

Starts the app on a loopback uvicorn in this process (one model for both paths), asks the
same questions directly and through POST /api/ask (waiting for each result), renders map
tiles through rio-tiler, and prints the ratios measured in this one run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def call(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    out = response.status, response.read()
    conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--model", default="tiny/qwen2_vl")
    parser.add_argument("--selector", default="rfm")
    args = parser.parse_args()

    import morecantile
    import uvicorn

    from lrsvqa.cli.ask_cmd import quiet_transformers
    from lrsvqa.pipeline import Pipeline
    from lrsvqa.serve import ServeConfig, create_app
    from lrsvqa.testing import make_ship_scene

    quiet_transformers()
    root = Path(tempfile.mkdtemp(prefix="lrsvqa-bench-serve-"))
    make_ship_scene(root / "scene.tif", args.size, ships=6)
    pipeline = Pipeline.from_pretrained(args.model, max_new_tokens=4)
    guard = create_app(pipeline, ServeConfig(root=root, max_queue=args.questions + 1))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(guard, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)

    options = {"selector": args.selector}
    questions = [f"Question {i}: how many ships?" for i in range(args.questions)]
    view = guard.app.state.runner.view(options)
    lock = guard.app.state.queue.model_lock
    with lock:  # warm both paths: the scene's tiles are then cached for every question
        view.ask(root / "scene.tif", "warm-up")
    # Direct and served questions alternate, so a busy machine slows both alike.
    direct, served = [], []
    before = rss_mb()
    for q in questions:
        with lock:
            start = time.perf_counter()
            view.ask(root / "scene.tif", q)
            direct.append(time.perf_counter() - start)
        start = time.perf_counter()
        status, body = call(
            port, "POST", "/api/ask", {"scene": "scene.tif", "question": q, "options": options}
        )
        assert status == 202, body
        job = json.loads(body)["job"]
        while json.loads(call(port, "GET", f"/api/jobs/{job}")[1])["state"] not in (
            "done",
            "error",
        ):
            time.sleep(0.01)
        assert call(port, "GET", f"/api/jobs/{job}/result")[0] == 200
        served.append(time.perf_counter() - start)
    grown = rss_mb() - before

    info = json.loads(call(port, "GET", "/api/scene?id=scene.tif")[1])["tiles"]
    west, south, east, north = info["bounds"]
    tms = morecantile.tms.get("WebMercatorQuad")
    tile_times = {}
    for z in (info["minzoom"], info["maxzoom"]):
        times = []
        for t in list(tms.tiles(west, south, east, north, [z]))[:16]:
            start = time.perf_counter()
            status, _ = call(port, "GET", f"/api/tiles/{t.z}/{t.x}/{t.y}.png?scene=scene.tif")
            times.append(time.perf_counter() - start)
            assert status in (200, 204)
        tile_times[z] = statistics.median(times) * 1000

    d, s = statistics.median(direct), statistics.median(served)
    print(
        f"scene {args.size} px, {args.model}, selector {args.selector}, {args.questions} questions"
    )
    print(
        f"per question, median: Pipeline.ask {d:.3f} s, through HTTP {s:.3f} s "
        f"-> served/direct {s / d:.2f}x (overhead {1000 * (s - d):.0f} ms)"
    )
    for z, ms in tile_times.items():
        print(f"map tile z={z}: median {ms:.1f} ms")
    print(f"resident memory after {args.questions} direct + served questions: {grown:+.0f} MB")
    server.should_exit = True
    pipeline.close()


if __name__ == "__main__":
    main()
