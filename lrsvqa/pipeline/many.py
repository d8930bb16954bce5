"""Many scenes, the same questions: ``ask_many`` yields answers as they finish.

Every question about a scene is asked before the next scene is opened, so the
questions share the scene's cache (pyramid, stretch, encoded tiles). A scene
that fails (damaged, unreachable, too large, an unusable STAC item) ends as one
``SceneFailure`` for the questions it had left; what is done with it is the
caller's choice (``on_error``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol

from lrsvqa.errors import ConfigError, LrsvqaError
from lrsvqa.pipeline.answer import Answer
from lrsvqa.pipeline.sources import SceneRef, expand_sources
from lrsvqa.pipeline.tables import answer_row

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip", "yield"]


class Asker(Protocol):
    """What ``ask_many`` needs of a pipeline."""

    def ask(self, scene: str, question: str, *, bands: Sequence[int] | None = None) -> Any: ...


@dataclass
class SceneAnswer(Answer):
    """An ``Answer`` that knows which catalogue scene it is about."""

    ref: SceneRef | None = None

    @classmethod
    def wrap(cls, answer: Answer, ref: SceneRef) -> SceneAnswer:
        values = {f.name: getattr(answer, f.name) for f in fields(Answer)}
        return cls(**values, ref=ref)


@dataclass(frozen=True)
class SceneFailure:
    """A scene that could not be asked about, and the questions it had left."""

    ref: SceneRef
    questions: tuple[str, ...]
    error: str  # the exception's class name
    message: str  # the lrsvqa message, one line
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scene": self.ref.location,
            "item_id": self.ref.item_id,
            "datetime": self.ref.datetime,
            "origin": self.ref.origin,
            "questions": list(self.questions),
            "error": self.error,
            "message": self.message,
        }


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def scene_refs(
    sources: Iterable[str | os.PathLike[str] | SceneRef] | str | os.PathLike[str], asset: str
) -> list[SceneRef]:
    """``SceneRef`` values as given, every other source expanded (in order)."""
    out: list[SceneRef] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            out.extend(expand_sources(pending, asset=asset))
            pending.clear()

    for source in [sources] if isinstance(sources, str | os.PathLike) else sources:
        if isinstance(source, SceneRef):
            flush()
            out.append(source)
        else:
            pending.append(os.fspath(source))
    flush()
    if not out:
        raise ConfigError("no scenes to ask about: the sources are empty")
    return out


def ask_scene(
    pipeline: Asker,
    ref: SceneRef,
    questions: Sequence[str],
    *,
    bands: Sequence[int] | None = None,
) -> Iterator[SceneAnswer | SceneFailure]:
    """Every question about one scene, in order; a failure ends the scene."""
    if ref.problem is not None:
        yield SceneFailure(ref, tuple(questions), "SceneOpenError", ref.problem)
        return
    for i, question in enumerate(questions):
        try:
            answer = pipeline.ask(ref.location, question, bands=bands)
        except LrsvqaError as exc:
            log.error("%s: %s: %s", ref.location, type(exc).__name__, one_line(exc))
            yield SceneFailure(ref, tuple(questions[i:]), type(exc).__name__, one_line(exc))
            return
        yield SceneAnswer.wrap(answer, ref) if isinstance(answer, Answer) else answer


def ask_many(
    pipeline: Asker,
    sources: Iterable[str | os.PathLike[str] | SceneRef] | str | os.PathLike[str],
    questions: str | Sequence[str],
    *,
    asset: str = "visual",
    bands: Sequence[int] | None = None,
    on_error: OnError = "raise",
) -> Iterator[SceneAnswer | SceneFailure]:
    """Ask every question about every scene of ``sources``; yield answers as they finish.

    ``on_error``: ``"raise"`` the first scene's LrsvqaError, ``"skip"`` failed scenes
    (logged), or ``"yield"`` a ``SceneFailure`` in their place.
    """
    if on_error not in ("raise", "skip", "yield"):
        raise ConfigError(f"on_error must be 'raise', 'skip' or 'yield', got {on_error!r}")
    asked = [questions] if isinstance(questions, str) else list(questions)
    if not asked:
        raise ConfigError("no questions given; ask at least one")
    for ref in scene_refs(sources, asset):
        for result in ask_scene(pipeline, ref, asked, bands=bands):
            if isinstance(result, SceneFailure):
                if on_error == "raise":
                    raise _reraise(result)
                if on_error == "skip":
                    continue
            yield result


def _reraise(failure: SceneFailure) -> LrsvqaError:
    import lrsvqa.errors as errors

    cls = getattr(errors, failure.error, None)
    if not (isinstance(cls, type) and issubclass(cls, LrsvqaError)):
        cls = LrsvqaError
    return cls(failure.message)


def ask_scene_rows(
    pipeline: Asker,
    ref: SceneRef,
    questions: Sequence[str],
    *,
    bands: Sequence[int] | None = None,
) -> Iterator[dict[str, Any]]:
    """``ask_scene`` as plain JSON-ready records: ``{"kind": "answer", **answer_row}``
    or ``{"kind": "error", **SceneFailure.to_dict()}`` (what a run log stores)."""
    for result in ask_scene(pipeline, ref, questions, bands=bands):
        if isinstance(result, SceneFailure):
            yield {"kind": "error", **result.to_dict()}
        else:
            yield {"kind": "answer", **answer_row(result, ref)}
