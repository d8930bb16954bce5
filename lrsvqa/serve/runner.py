"""Runs one job on the shared model: per-request options over the server's defaults.

Every request's pipeline is a view of the one loaded ``Pipeline``: the same adapter
(and its vision-prefix caches), the same per-scene sessions, the same scorer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import asdict, replace
from typing import Any

from lrsvqa.errors import LrsvqaError, RasterReadError
from lrsvqa.pipeline import Pipeline
from lrsvqa.pipeline.progress import Progress
from lrsvqa.serve.jobs import Job
from lrsvqa.serve.results import JobResult, build_result
from lrsvqa.serve.scenes import SceneCatalog

MAX_VIEWS = 32
_FOCUS_KEYS = {
    "selector": "selector",
    "keep_ratio": "keep_ratio",
    "max_tiles": "max_tiles",
    "budget": "token_budget",
    "max_depth": "max_depth",
    "seed": "seed",
}
_PRUNE_KEYS = {
    "llm_prune": "method",
    "pdrop_ratio": "pdrop_ratio",
    "pdrop_layers": "pdrop_layers",
    "fastv_k": "fastv_k",
    "fastv_ratio": "fastv_ratio",
    "fastv_query": "fastv_query",
}


class PipelineRunner:
    """Turns a job into a ``JobResult`` with the server's pipeline."""

    def __init__(self, pipeline: Pipeline, catalog: SceneCatalog, max_new_tokens: int):
        self.pipeline = pipeline
        self.catalog = catalog
        self.max_new_tokens = max_new_tokens
        self._views: OrderedDict[Any, Pipeline] = OrderedDict()
        self._lock = threading.Lock()

    def defaults(self) -> dict[str, Any]:
        """The options a request gets when it leaves them out."""
        focus, llm = self.pipeline.focus, self.pipeline.prune.llm
        return {
            **{name: getattr(focus, attr) for name, attr in _FOCUS_KEYS.items()},
            **{name: getattr(llm, attr) for name, attr in _PRUNE_KEYS.items()},
            "max_new_tokens": min(self.pipeline.max_new_tokens, self.max_new_tokens),
            "bands": None,
        }

    def view(self, options: dict[str, Any]) -> Pipeline:
        """The pipeline for these options (built once per distinct setting, checked now)."""
        base = self.pipeline
        focus = replace(
            base.focus,
            **{attr: options[name] for name, attr in _FOCUS_KEYS.items() if name in options},
        )
        prune_args = {attr: options[name] for name, attr in _PRUNE_KEYS.items() if name in options}
        if prune_args.get("pdrop_layers") is not None:
            prune_args["pdrop_layers"] = tuple(prune_args["pdrop_layers"])
        prune = replace(base.prune, llm=replace(base.prune.llm, **prune_args))
        new_tokens = int(options.get("max_new_tokens") or base.max_new_tokens)
        if new_tokens > self.max_new_tokens:
            from lrsvqa.errors import ConfigError

            raise ConfigError(
                f"max_new_tokens {new_tokens} is over this server's limit of {self.max_new_tokens}"
            )
        key = (focus, prune, new_tokens)
        with self._lock:
            found = self._views.get(key)
            if found is not None:
                self._views.move_to_end(key)
                return found
        if key == (base.focus, base.prune, base.max_new_tokens):
            view = base
        else:
            view = Pipeline(
                base.adapter,
                focus=focus,
                prune=prune,
                pyramid=base.pyramid,
                max_new_tokens=new_tokens,
            )
            view.sessions = base.sessions  # one cache of scenes and encoded tiles
            if (focus.focus, focus.layers) == (base.focus.focus, base.focus.layers):
                view.scorer = base.scorer
        with self._lock:
            self._views[key] = view
            while len(self._views) > MAX_VIEWS:
                self._views.popitem(last=False)
        return view

    def __call__(self, job: Job, emit: Any) -> JobResult:
        ref = self.catalog.resolve(job.scene)
        options = job.options
        bands = tuple(options["bands"]) if options.get("bands") else None
        view = self.view(options)

        def progress(p: Progress) -> None:
            if p.stage != "done":  # the queue sends the job's own 'done' with the result
                emit({k: v for k, v in asdict(p).items() if v is not None})

        try:
            answer = view.ask(ref.path, job.question, bands=bands, progress=progress)
            result = build_result(answer, view.session(ref.path, bands).pyramid)
        except LrsvqaError as exc:
            # The client knows the scene by its id, not by where it lives on this machine.
            message = " ".join(str(exc).split()).replace(ref.path, ref.id)
            raise type(exc)(message) from None
        except Exception as exc:
            if not type(exc).__module__.startswith("rasterio"):
                raise
            # A GDAL error the reader did not translate: still the scene's fault, not ours.
            detail = " ".join(str(exc).split()).replace(ref.path, ref.id)[:200]
            raise RasterReadError(
                f"{ref.id}: cannot read the scene ({detail}); the file is damaged or "
                "truncated, re-download or re-export it"
            ) from None
        result.data["answer"]["scene"] = ref.id
        result.data["scene"] = ref.id
        return result
