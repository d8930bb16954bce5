"""The ``lrsvqa serve`` ASGI app: scenes, map tiles, questions as jobs, results, the page."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from lrsvqa import __version__
from lrsvqa.errors import BandError, LrsvqaError, SceneOpenError
from lrsvqa.serve.config import ServeConfig
from lrsvqa.serve.guard import Guard
from lrsvqa.serve.jobs import DONE, FAILED, Job, JobQueue, QueueFull
from lrsvqa.serve.runner import PipelineRunner
from lrsvqa.serve.scenes import SceneAccessError, SceneCatalog, SceneNotFound
from lrsvqa.serve.schemas import AskRequest, JobCreated
from lrsvqa.serve.tiles import TileService

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
HEARTBEAT_S = 15.0


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def create_app(pipeline: Any, config: ServeConfig) -> Any:
    """The ASGI app for one loaded ``Pipeline`` (wrapped in the token/body guard)."""
    catalog = SceneCatalog(config.root, config.allow_urls)
    tiles = TileService()
    runner = PipelineRunner(pipeline, catalog, config.max_new_tokens)
    queue = JobQueue(runner, max_queue=config.max_queue, keep=config.keep_jobs)
    model_id = pipeline.model_id

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        queue.close()
        tiles.close()

    app = FastAPI(
        lifespan=lifespan,
        title="lrsvqa serve",
        version=__version__,
        description="Ask a vision-language model about gigapixel scenes; see its evidence on a map.",
        docs_url=None,  # served below from the vendored Swagger UI, not from a CDN
        redoc_url=None,
    )
    app.state.config, app.state.queue, app.state.catalog = config, queue, catalog
    app.state.tiles, app.state.runner, app.state.pipeline = tiles, runner, pipeline

    if config.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )

    # -- errors: JSON, one line, never a traceback ---------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = (
            {"Retry-After": str(exc.extra["retry_after"])} if "retry_after" in exc.extra else None
        )
        return JSONResponse({"error": exc.message, **exc.extra}, exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            loc = list(err.get("loc", ()))
            if err.get("type") == "json_invalid":
                at = loc[-1] if len(loc) > 1 else "?"
                problems.append({"field": "body", "problem": f"not valid JSON (at character {at})"})
                continue
            field = ".".join(str(part) for part in loc if part != "body")
            problems.append({"field": field or "body", "problem": str(err.get("msg", "invalid"))})
        first = problems[0] if problems else {"field": "body", "problem": "invalid"}
        message = f"{first['field']}: {first['problem']}"
        return JSONResponse({"error": message, "field": first["field"], "problems": problems}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            message = "body: not a JSON document in UTF-8; send Content-Type: application/json"
            return JSONResponse({"error": message, "field": "body"}, 422)
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint {request.url.path}; see /docs"
        return JSONResponse({"error": detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(LrsvqaError)
    async def _lrsvqa_error(request: Request, exc: LrsvqaError) -> JSONResponse:
        # Scenes are named by their id: the root's location on this machine stays private.
        message = " ".join(str(exc).split()).replace(f"{config.root}{os.sep}", "")
        return JSONResponse({"error": message}, _status(exc))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"error": "internal error (see the server log)"}, 500)

    # -- the page ------------------------------------------------------------------

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        ui = "/static/vendor/swagger-ui"
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{ui}/swagger-ui-bundle.js",
            swagger_css_url=f"{ui}/swagger-ui.css",
            swagger_favicon_url=f"{ui}/favicon-32x32.png",
        )

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    # -- service -------------------------------------------------------------------

    @app.get("/api/health", summary="Liveness, the model and the queue")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "model": model_id,
            "random_model": model_id.startswith("tiny/"),
            "auth": config.token is not None,
        }

    @app.get("/api/info", summary="Model, defaults, limits and queue state")
    def info() -> dict[str, Any]:
        return {
            "model": model_id,
            "revision": pipeline.revision,
            "random_model": model_id.startswith("tiny/"),
            "note": f"{model_id} is a tiny random model: its answers are meaningless"
            if model_id.startswith("tiny/")
            else None,
            "defaults": runner.defaults(),
            "limits": {
                "max_queue": queue.max_queue,
                "max_body_bytes": config.max_body,
                "max_new_tokens": config.max_new_tokens,
            },
            "allow_urls": list(catalog.allow_urls),
            "queue": queue.stats(),
        }

    # -- scenes and tiles ----------------------------------------------------------

    @app.get("/api/scenes", summary="Every raster under --root")
    def scenes() -> dict[str, Any]:
        return {"scenes": catalog.list(), "allow_urls": list(catalog.allow_urls)}

    @app.get("/api/scene", summary="One scene: size, bands, CRS, footprint, tile scheme")
    def scene_info(
        id: str = Query(..., max_length=1024, description="scene id or allowed URL"),
        bands: str | None = Query(None, max_length=32, description="e.g. 4,3,2"),
    ) -> dict[str, Any]:
        ref = catalog.resolve(id)
        described = catalog.describe(ref)
        if described.get("error"):
            raise ApiError(422, described["error"], scene=ref.id)
        described["tiles"] = tiles.layer_info(ref, _bands(bands))
        return described

    @app.get(
        "/api/tiles/{z}/{x}/{y}.png",
        summary="XYZ tile (Web Mercator; pixel view for scenes without CRS); 204 outside",
        response_class=Response,
    )
    def tile(
        z: int,
        x: int,
        y: int,
        scene: str = Query(..., max_length=1024),
        bands: str | None = Query(None, max_length=32),
    ) -> Response:
        if not (0 <= z <= 30 and 0 <= x < 2**z and 0 <= y < 2**z):
            raise ApiError(422, f"tile {z}/{x}/{y} does not exist (0 <= x, y < 2**z, z <= 30)")
        ref = catalog.resolve(scene)
        png = tiles.tile(ref, z, x, y, _bands(bands))
        if png is None:
            return Response(status_code=204)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=300"})

    # -- questions -----------------------------------------------------------------

    @app.post("/api/ask", status_code=202, response_model=JobCreated, summary="Queue a question")
    def ask(body: AskRequest) -> JobCreated:
        ref = catalog.resolve(body.scene)
        options = body.options.model_dump(exclude_none=True)
        runner.view(options)  # bad option combinations fail now, not in the queue
        if options.get("bands"):
            from lrsvqa.io import open_scene

            open_scene(ref.path, bands=options["bands"]).close()
        try:
            job = queue.submit(ref.id, body.question, options)
        except QueueFull as exc:
            raise ApiError(429, str(exc), retry_after=exc.retry_after) from None
        base = f"/api/jobs/{job.id}"
        return JobCreated(
            job=job.id,
            seq=job.seq,
            position=int(job.events[0].get("position", 0)) if job.events else 0,
            status_url=base,
            events_url=f"{base}/events",
            result_url=f"{base}/result",
        )

    @app.get("/api/jobs", summary="Jobs kept by this server (optionally for one scene)")
    def jobs(scene: str | None = Query(None, max_length=1024)) -> dict[str, Any]:
        found = queue.jobs()
        if scene is not None:
            found = [j for j in found if j.scene == scene]
        out = []
        for job in found:
            status = job.status()
            if job.state == DONE:
                status["text"] = job.result.data["answer"]["text"]
            out.append(status)
        return {"jobs": out}

    @app.get("/api/jobs/{job_id}", summary="One job's state and latest progress")
    def job_status(job_id: str) -> dict[str, Any]:
        return _job(queue, job_id).status()

    @app.get("/api/jobs/{job_id}/events", summary="Progress as server-sent events")
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        job = _job(queue, job_id)

        async def stream() -> AsyncIterator[str]:
            sent, quiet = 0, 0.0
            while True:
                events = job.events[sent:]
                for event in events:
                    yield f"event: {event['stage']}\ndata: {json.dumps(event)}\n\n"
                sent += len(events)
                if job.state in (DONE, FAILED) and sent >= len(job.events):
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.1)
                quiet = 0.0 if events else quiet + 0.1
                if quiet >= HEARTBEAT_S:
                    quiet = 0.0
                    yield ": keep-alive\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/api/jobs/{job_id}/result", summary="The answer, evidence GeoJSON and focus heat")
    def job_result(job_id: str) -> dict[str, Any]:
        job = _done(queue, job_id)
        return {"job": job.id, "question": job.question, "options": job.options, **job.result.data}

    @app.get("/api/jobs/{job_id}/evidence.geojson", summary="Evidence tiles (EPSG:4326)")
    def job_geojson(job_id: str) -> Response:
        job = _done(queue, job_id)
        return Response(
            json.dumps(job.result.data["geojson"]),
            media_type="application/geo+json",
            headers={"Content-Disposition": f'attachment; filename="evidence-{job.seq}.geojson"'},
        )

    @app.get("/api/jobs/{job_id}/overlay.png", summary="Overlay PNG (as `lrsvqa ask --overlay`)")
    def job_overlay(job_id: str) -> Response:
        job = _done(queue, job_id)
        return Response(
            job.result.overlay_png(),
            media_type="image/png",
            headers={"Content-Disposition": f'inline; filename="overlay-{job.seq}.png"'},
        )

    @app.get("/api/jobs/{job_id}/heat/{level}.png", summary="Focus heat raster of one level")
    def job_heat(job_id: str, level: int) -> Response:
        job = _done(queue, job_id)
        found = job.result.heat_png(level)
        if found is None:
            raise ApiError(404, f"level {level} was not scored in this job")
        png, box = found
        return Response(
            png, media_type="image/png", headers={"X-Pixel-Box": ",".join(map(str, box))}
        )

    return Guard(app, token=config.token, max_body=config.max_body)


def _bands(text: str | None) -> tuple[int, ...] | None:
    if text is None or not text.strip():
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise BandError(f"bands {text!r}: give 1-based band numbers such as 4,3,2") from None


def _job(queue: JobQueue, job_id: str) -> Job:
    job = queue.get(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r} on this server (results last while it runs)")
    return job


def _done(queue: JobQueue, job_id: str) -> Job:
    job = _job(queue, job_id)
    if job.state == FAILED:
        raise ApiError(422, job.error or "the job failed", state=job.state)
    if job.state != DONE:
        raise ApiError(
            409, f"job {job_id} is {job.state}; wait for its 'done' event", state=job.state
        )
    return job


def _status(exc: LrsvqaError) -> int:
    if isinstance(exc, SceneAccessError):
        return 403
    if isinstance(exc, SceneNotFound):
        return 404
    if isinstance(exc, SceneOpenError):
        return 422
    return 422
