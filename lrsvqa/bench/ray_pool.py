"""Scale-out on Ray: one model per actor (one GPU each where there are GPUs), scenes
streamed to the actors, results handed back to the driver, which logs them.

An actor whose process dies (killed, out of memory, a lost node) is restarted by
Ray and its scene retried (``MAX_RETRIES`` times); a scene that still cannot be
answered becomes an error record, and the run goes on. Needs ``lrsvqa[ray]``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from lrsvqa.errors import ConfigError
from lrsvqa.pipeline.many import ask_scene_rows, one_line
from lrsvqa.pipeline.sources import SceneRef

log = logging.getLogger(__name__)

#: Restarts of a dead actor, and retries of the scene it was working on.
MAX_RETRIES = 3
#: Scenes queued per actor, so an actor never waits for the driver.
IN_FLIGHT_PER_ACTOR = 2


class SceneWorker:
    """A Ray actor: builds its answerer once, then answers whole scenes."""

    def __init__(self, factory: Callable[[], Any]):
        self.answerer = factory()

    def config(self) -> dict[str, Any]:
        a = self.answerer
        return {"model_id": a.model_id, "revision": a.revision, "answerer": a.config_dict()}

    def run(
        self, ref: dict[str, Any], questions: list[str], bands: tuple[int, ...] | None
    ) -> list[dict[str, Any]]:
        scene = SceneRef.from_dict(ref)
        return list(ask_scene_rows(self.answerer, scene, questions, bands=bands))


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'lrsvqa[ray]'") from None
    return ray


def _connect(ray: Any, address: str, num_cpus: int | None) -> bool:
    """Start or join Ray; True when this call started it (and must shut it down)."""
    if ray.is_initialized():
        return False
    local = address in ("", "local")
    # Worker output stays in Ray's session logs: stdout is ours (--json), failures reach
    # the errors table.
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if local:
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
    elif num_cpus is not None:
        raise ConfigError("--ray-num-cpus applies to a new local Ray instance, not to ADDRESS")
    for attempt in (1, 2):
        try:
            ray.init(address=None if local else address, **kwargs)
            return True
        except Exception as exc:  # Ray raises bare Exception for a slow node start
            # An overloaded machine can miss Ray's fixed 30 s start window: try once more.
            if attempt == 1 and local and "timed out during startup" in str(exc):
                log.warning("Ray's local node was slow to start; trying once more")
                ray.shutdown()
                continue
            raise ConfigError(
                f"--ray {address}: cannot start or reach Ray ({one_line(exc)[:300]})"
            ) from None
    return True


def ray_results(
    todo: Sequence[tuple[SceneRef, list[str]]],
    factory: Callable[[], Any],
    *,
    bands: tuple[int, ...] | None,
    address: str,
    actors: int | None,
    num_cpus: int | None,
    on_config: Callable[[Mapping[str, Any]], None],
) -> Iterator[tuple[SceneRef, list[dict[str, Any]], bool]]:
    """Answer ``todo`` on a Ray actor pool; yield each scene's records as it finishes."""
    ray = _import_ray()
    started = _connect(ray, address, num_cpus)
    pool: list[Any] = []
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        n = actors or max(gpus, 1)
        options: dict[str, Any] = {"max_restarts": MAX_RETRIES, "max_task_retries": MAX_RETRIES}
        options.update({"num_gpus": 1} if gpus else {"num_cpus": 1})
        worker = ray.remote(**options)(SceneWorker)
        pool = [worker.remote(factory) for _ in range(min(n, len(todo)))]
        log.info("Ray: %d actor(s) (%s), %d scenes", len(pool), "GPU" if gpus else "CPU", len(todo))
        try:
            on_config(ray.get(pool[0].config.remote()))
        except ray.exceptions.RayError as exc:
            raise ConfigError(f"Ray actors could not build the model: {_cause(exc)}") from None
        yield from _stream(ray, pool, todo, bands)
    finally:
        for actor in pool:
            ray.kill(actor)
        if started:
            ray.shutdown()


def _stream(
    ray: Any, pool: list[Any], todo: Sequence[tuple[SceneRef, list[str]]], bands: Any
) -> Iterator[tuple[SceneRef, list[dict[str, Any]], bool]]:
    queue = deque(todo)
    inflight: dict[Any, tuple[SceneRef, list[str], Any]] = {}

    def submit(actor: Any) -> None:
        ref, questions = queue.popleft()
        task = actor.run.remote(ref.to_dict(), questions, bands)
        inflight[task] = (ref, questions, actor)

    for actor in pool:
        for _ in range(IN_FLIGHT_PER_ACTOR):
            if queue:
                submit(actor)
    while inflight:
        ready, _ = ray.wait(list(inflight), num_returns=1)
        ref, questions, actor = inflight.pop(ready[0])
        try:
            records = ray.get(ready[0])
        except ray.exceptions.RayError as exc:
            log.error("%s: the Ray worker failed: %s", ref.location, _cause(exc))
            records = [_worker_error(ref, questions, exc)]
        yield ref, records, True
        if queue:
            submit(actor)


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    return one_line(cause if cause is not None else exc)[:300]


def _worker_error(ref: SceneRef, questions: list[str], exc: BaseException) -> dict[str, Any]:
    return {
        "kind": "error",
        "scene": ref.location,
        "item_id": ref.item_id,
        "datetime": ref.datetime,
        "origin": ref.origin,
        "questions": list(questions),
        "error": type(exc).__name__,
        "message": f"the Ray worker failed {MAX_RETRIES + 1} times on this scene: {_cause(exc)}",
    }
