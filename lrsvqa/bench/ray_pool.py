"""Scale-out on Ray: one model per actor (one GPU each where there are GPUs), scenes
streamed to the actors, results handed back to the driver, which logs them.

An actor whose process dies (killed, out of memory, a lost node) is restarted by
Ray and its scene retried (``MAX_RETRIES`` times); a scene that still cannot be
answered becomes an error record, and the run goes on. Needs ``lrsvqa[ray]``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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

    def ask_each(self, scene: str, questions: list[str]) -> list[dict[str, Any]]:
        """Each question on its own (a benchmark's): an answer dict or the error."""
        from lrsvqa.errors import LrsvqaError

        out: list[dict[str, Any]] = []
        for question in questions:
            try:
                out.append({"answer": self.answerer.ask(scene, question).to_dict()})
            except LrsvqaError as exc:
                out.append({"error": type(exc).__name__, "message": one_line(exc)})
        return out


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


@contextmanager
def actor_pool(
    factory: Callable[[], Any],
    *,
    address: str,
    actors: int | None,
    num_cpus: int | None,
    tasks: int,
    on_config: Callable[[Mapping[str, Any]], None],
) -> Iterator[tuple[Any, list[Any]]]:
    """``(ray, actors)``: one model per actor (``num_gpus=1`` where the cluster has
    GPUs, else one CPU each); the first actor's config goes to ``on_config``."""
    ray = _import_ray()
    # Ray prints the cluster's messages (a worker died, a task retried) on stdout, which
    # is the command's own (``--json``): send them to stderr while Ray runs.
    quiet = contextlib.redirect_stdout(sys.stderr)
    quiet.__enter__()
    started = False
    pool: list[Any] = []
    try:
        started = _connect(ray, address, num_cpus)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        n = min(actors or max(gpus, 1), max(tasks, 1))
        options: dict[str, Any] = {"max_restarts": MAX_RETRIES, "max_task_retries": MAX_RETRIES}
        options.update({"num_gpus": 1} if gpus else {"num_cpus": 1})
        worker = ray.remote(**options)(SceneWorker)
        pool = [worker.remote(factory) for _ in range(n)]
        log.info("Ray: %d actor(s) on %s, %d scenes", n, "GPUs" if gpus else "CPUs", tasks)
        try:
            on_config(ray.get(pool[0].config.remote()))
        except ray.exceptions.RayError as exc:
            raise ConfigError(f"Ray actors could not build the model: {_cause(exc)}") from None
        yield ray, pool
    finally:
        for actor in pool:
            ray.kill(actor)
        if started:
            ray.shutdown()
        quiet.__exit__(None, None, None)


def stream(
    ray: Any, pool: list[Any], tasks: Sequence[tuple[Any, Callable[[Any], Any]]]
) -> Iterator[tuple[Any, Any, BaseException | None]]:
    """Run ``call(actor)`` for every ``(key, call)`` over the pool, a few in flight per
    actor; yield ``(key, result, None)`` or ``(key, None, error)`` as each finishes."""
    queue = deque(tasks)
    inflight: dict[Any, tuple[Any, Any]] = {}

    def submit(actor: Any) -> None:
        key, call = queue.popleft()
        inflight[call(actor)] = (key, actor)

    for actor in pool:
        for _ in range(IN_FLIGHT_PER_ACTOR):
            if queue:
                submit(actor)
    dead: set[int] = set()
    while inflight:
        ready, _ = ray.wait(list(inflight), num_returns=1)
        key, actor = inflight.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except ray.exceptions.RayError as exc:
            log.error("the Ray worker failed: %s", _cause(exc))
            if isinstance(exc, ray.exceptions.RayActorError):
                dead.add(id(actor))  # out of restarts: no more work for it
            yield key, None, exc
        else:
            yield key, result, None
        if queue and id(actor) not in dead:
            submit(actor)
        elif queue and not inflight:  # every actor is dead
            while queue:
                key, _call = queue.popleft()
                yield key, None, RuntimeError("every Ray actor died; no worker is left")


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
    """``ask-many`` on a Ray actor pool: each scene's records as it finishes."""
    with actor_pool(
        factory,
        address=address,
        actors=actors,
        num_cpus=num_cpus,
        tasks=len(todo),
        on_config=on_config,
    ) as (ray, pool):
        tasks = [
            ((ref, qs), lambda a, r=ref, q=qs: a.run.remote(r.to_dict(), q, bands))
            for ref, qs in todo
        ]
        for (ref, questions), records, error in stream(ray, pool, tasks):
            if error is not None:
                records = [_worker_error(ref, questions, error)]
            yield ref, records, True


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


def ray_question_answers(
    todo: Sequence[Any],
    options: Any,
    make_answerer: Callable[[Any], Any],
    use_config: Callable[[dict[str, Any]], None],
) -> Iterator[tuple[Any, dict[str, Any] | None, tuple[str, str] | None]]:
    """``bench`` on a Ray actor pool: each image's questions go to one actor together
    (so they share its scene cache); yields ``(question, answer dict, error)``."""
    from functools import partial

    from lrsvqa.bench.records import question_text  # LRS-VQA's text or MME's prompt

    by_image: dict[str, list[Any]] = {}
    for q in todo:
        by_image.setdefault(str(q.image_path), []).append(q)
    with actor_pool(
        partial(make_answerer, options),
        address=options.ray,
        actors=options.ray_actors,
        num_cpus=options.ray_num_cpus,
        tasks=len(by_image),
        on_config=lambda config: use_config(dict(config)),
    ) as (ray, pool):
        prompts = {scene: [question_text(q) for q in qs] for scene, qs in by_image.items()}
        tasks = [
            (qs, lambda a, s=scene, t=prompts[scene]: a.ask_each.remote(s, t))
            for scene, qs in by_image.items()
        ]
        for questions, results, error in stream(ray, pool, tasks):
            for i, q in enumerate(questions):
                if error is not None:
                    message = f"the Ray worker failed {MAX_RETRIES + 1} times: {_cause(error)}"
                    yield q, None, (type(error).__name__, message)
                elif "answer" in results[i]:
                    yield q, results[i]["answer"], None
                else:
                    yield q, None, (results[i]["error"], results[i]["message"])
