"""Questions run one at a time on the one model: a bounded queue of jobs with progress.

The HTTP side only enqueues and reads; a single worker thread owns the model. Each job
keeps its progress events (for server-sent events) and, once done, its result, for as
long as the server runs (the oldest finished jobs go past ``keep`` jobs).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from lrsvqa.errors import LrsvqaError

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "error"


class QueueFull(Exception):
    """The queue holds its limit of waiting jobs; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"the question queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    """One question about one scene, from submission to result."""

    id: str
    seq: int
    scene: str
    question: str
    options: dict[str, Any]
    state: str = QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    result: Any = None  # whatever the runner returned (kept while the server runs)
    error: str | None = None

    def status(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
            "scene": self.scene,
            "question": self.question,
            "options": self.options,
            "state": self.state,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "progress": self.events[-1] if self.events else None,
            "error": self.error,
        }


Runner = Callable[[Job, Callable[[dict[str, Any]], None]], Any]


class JobQueue:
    """FIFO of jobs served by one worker thread that calls ``runner(job, emit)``."""

    def __init__(self, runner: Runner, *, max_queue: int, keep: int):
        self.runner = runner
        self.max_queue = max_queue
        self.keep = keep
        self.model_lock = threading.Lock()  # held while the model works
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._seq = itertools.count(1)
        self._durations: deque[float] = deque(maxlen=20)
        self._stop = False
        self._thread = threading.Thread(target=self._work, name="lrsvqa-serve-worker", daemon=True)
        self._thread.start()

    # -- HTTP side -----------------------------------------------------------------

    def submit(self, scene: str, question: str, options: dict[str, Any]) -> Job:
        with self._cond:
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(self._retry_after())
            job = Job(uuid.uuid4().hex, next(self._seq), scene, question, options)
            self._jobs[job.id] = job
            self._emit(job, {"stage": "queued", "position": len(self._waiting) + 1})
            self._waiting.append(job)
            self._forget_old()
            self._cond.notify_all()
            return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        with self._cond:
            return list(self._jobs.values())

    def events_since(self, job: Job, index: int, timeout: float) -> list[dict[str, Any]]:
        """The job's events from ``index`` on, waiting up to ``timeout`` s for a new one."""
        with self._cond:
            if len(job.events) <= index and job.state not in (DONE, FAILED):
                self._cond.wait(timeout)
            return list(job.events[index:])

    def stats(self) -> dict[str, Any]:
        with self._cond:
            running = sum(1 for j in self._jobs.values() if j.state == RUNNING)
            return {
                "waiting": len(self._waiting),
                "running": running,
                "max_queue": self.max_queue,
                "kept_jobs": len(self._jobs),
            }

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    # -- worker side ---------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job = self._waiting.popleft()
                job.state = RUNNING
                job.started = time.time()
                for position, other in enumerate(self._waiting, start=1):
                    self._emit(other, {"stage": "queued", "position": position})
                self._emit(job, {"stage": "started"})
            start = time.perf_counter()
            try:
                with self.model_lock:
                    result = self.runner(job, partial(self._locked_emit, job))
            except LrsvqaError as exc:
                self._finish(job, FAILED, None, " ".join(str(exc).split()))
            except Exception:
                log.exception("job %s failed", job.id)
                self._finish(
                    job, FAILED, None, "internal error while answering (see the server log)"
                )
            else:
                self._finish(job, DONE, result, None)
            self._durations.append(time.perf_counter() - start)

    def _finish(self, job: Job, state: str, result: Any, error: str | None) -> None:
        with self._cond:
            job.result, job.error = result, error
            job.finished = time.time()
            job.state = state
            event: dict[str, Any] = {"stage": state}
            if error:
                event["error"] = error
            self._emit(job, event)
            self._forget_old()

    def _locked_emit(self, job: Job, event: dict[str, Any]) -> None:
        with self._cond:
            self._emit(job, event)

    def _emit(self, job: Job, event: dict[str, Any]) -> None:
        event = {"job": job.id, "t": round(time.time() - job.created, 3), **event}
        job.events.append(event)
        self._cond.notify_all()

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in (DONE, FAILED)]
        for job in finished[: max(0, len(self._jobs) - self.keep)]:
            del self._jobs[job.id]

    def _retry_after(self) -> int:
        mean = sum(self._durations) / len(self._durations) if self._durations else 5.0
        return max(1, math.ceil(mean * (len(self._waiting) + 1)))
