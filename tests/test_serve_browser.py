"""``lrsvqa serve`` started as the README says, exposed with a token, used by a real
headless Chromium (Debian's ``chromium`` + ``chromium-driver``, through Selenium).

The page asks for the token, shows the scene, asks the question, shows the answer and
draws the evidence tiles; the screenshot is kept as a test artefact.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'lrsvqa[serve]'")
pytest.importorskip("selenium", reason="needs the serve extra: pip install 'lrsvqa[serve]'")

ROOT = Path(__file__).resolve().parents[1]
ARTEFACTS = Path(os.environ.get("LRSVQA_TEST_ARTEFACTS", ROOT / "test-artefacts"))
TOKEN = "browser-test-token-0123"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "lrsvqa.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        **kw,
    )


def test_bind_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    env_token = os.environ.pop("LRSVQA_TOKEN", None)
    try:
        started = time.time()
        result = _cli(
            "serve", "--root", str(tmp_path), "--host", "0.0.0.0", "--model", "tiny/qwen2_vl"
        )
        assert result.returncode == 2
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith("lrsvqa: error: --host 0.0.0.0") and "--token" in line
        assert time.time() - started < 60  # refused before any model loads
        result = _cli("serve", "--root", str(tmp_path / "nope"), "--model", "tiny/qwen2_vl")
        assert result.returncode == 2 and "--root" in result.stderr
    finally:
        if env_token is not None:
            os.environ["LRSVQA_TOKEN"] = env_token


@pytest.fixture(scope="module")
def exposed_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from lrsvqa.testing import make_ship_scene

    root = tmp_path_factory.mktemp("browser-root")
    make_ship_scene(
        root / "scene.tif", 2048, ships=5
    )  # two pyramid levels  # what `lrsvqa demo` writes, smaller
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LRSVQA_TOKEN": TOKEN}
    log = (tmp_path_factory.mktemp("browser-log") / "serve.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lrsvqa.cli.main",
            "serve",
            "--root",
            str(root),
            "--model",
            "tiny/qwen2_vl",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--max-new-tokens",
            "4",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while True:
        assert process.poll() is None, Path(log.name).read_text()
        try:
            if _get(f"{base}/api/health")[0] == 200:
                break
        except OSError:
            pass
        assert time.time() < deadline, "lrsvqa serve did not come up"
        time.sleep(0.5)
    yield {"base": base, "root": root, "process": process}
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_exposed_server_checks_the_token(exposed_server: Any) -> None:
    base = exposed_server["base"]
    assert _get(f"{base}/api/scenes")[0] == 401
    assert _get(f"{base}/api/scenes", "not-the-token")[0] == 401
    status, data = _get(f"{base}/api/scenes", TOKEN)
    assert status == 200 and [s["id"] for s in data["scenes"]] == ["scene.tif"]


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)
def test_page_in_headless_chromium(exposed_server: Any) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base = exposed_server["base"]
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    wait = WebDriverWait(driver, 180, poll_frequency=0.2)
    try:
        driver.get(base + "/")
        token_box = wait.until(
            lambda d: (
                d.find_element(By.ID, "token")
                if d.find_element(By.ID, "token-form").is_displayed()
                else None
            )
        )
        token_box.send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "#token-form button").click()
        wait.until(lambda d: d.find_element(By.ID, "scene").get_attribute("value") == "scene.tif")
        note = driver.find_element(By.ID, "model-note")
        assert note.is_displayed() and "meaningless" in note.text
        # the base map: tiles fetched with the token and drawn
        wait.until(
            lambda d: (
                d.execute_script(
                    "return [...document.querySelectorAll('.leaflet-tile-pane img')]"
                    ".filter(i => i.complete && i.naturalWidth === 256).length"
                )
                > 0
            )
        )
        driver.find_element(By.ID, "question").send_keys("How many ships are there in this image?")
        driver.find_element(By.ID, "ask").click()
        wait.until(lambda d: d.find_element(By.ID, "result").is_displayed())
        answer = driver.execute_script("return document.getElementById('answer-text').textContent")
        drawn = int(driver.find_element(By.ID, "map").get_attribute("data-evidence-count"))
        paths = driver.execute_script(
            "return document.querySelectorAll('.leaflet-evidence-pane path.evidence-tile').length"
        )
        cost = driver.find_element(By.ID, "cost").text
        history = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#history li")]
        driver.find_element(By.ID, "heat-toggle").click()
        heat = driver.execute_script(
            "return document.querySelectorAll('.leaflet-heat-pane path').length"
        )
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTEFACTS / "serve_page.png"))
        errors = driver.find_element(By.ID, "error")
        assert not errors.is_displayed(), errors.text
        # the API docs: the vendored Swagger UI renders every endpoint (no CDN reachable)
        driver.get(base + "/docs")
        title = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title"))
        assert "lrsvqa serve" in title.text
        operations = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
        documented = {op.text.replace("\u200b", "") for op in operations}
    finally:
        driver.quit()
    assert {"/api/ask", "/api/scenes"} <= documented, documented
    _, jobs = _get(f"{base}/api/jobs", TOKEN)
    job = jobs["jobs"][-1]
    _, result = _get(f"{base}/api/jobs/{job['id']}/result", TOKEN)
    assert answer == (result["answer"]["text"] or "(empty answer)")
    tiles = len(result["geojson"]["features"])
    assert tiles > 0 and drawn == tiles and paths == tiles
    assert "vision tokens to the LLM" in cost and "TFLOPs" in cost
    assert len(history) == 1 and history[0].startswith("#1 How many ships")
    assert heat == sum(len(level["tiles"]) for level in result["heat"]) > 0
    assert (ARTEFACTS / "serve_page.png").stat().st_size > 10_000
