"""``Pipeline``: scene → pyramid → focus → pruned tokens → answer with evidence and cost."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from lrsvqa.errors import ConfigError
from lrsvqa.focus import AttentionScorer, FocusConfig, TokenScorer, levels_to_visit, select
from lrsvqa.focus.padding import unpadded_keep
from lrsvqa.io.scene import Scene
from lrsvqa.models.base import InputFormat
from lrsvqa.pipeline.answer import Answer
from lrsvqa.pipeline.evidence import evidence_of
from lrsvqa.pipeline.preset import Preset
from lrsvqa.pipeline.preset import resolve as resolve_preset
from lrsvqa.pipeline.progress import ProgressCallback, TileBar
from lrsvqa.pipeline.session import SceneSession, SessionCache
from lrsvqa.pipeline.trace import Trace
from lrsvqa.prune import (
    PruneConfig,
    assemble_segments,
    generate_pruned,
    thumbnail_segment,
    tile_segments,
)
from lrsvqa.prune.budget import check_context, check_thumbnail, fit_budget
from lrsvqa.pyramid import PyramidConfig, Tile

if TYPE_CHECKING:
    import numpy as np

    from lrsvqa.models.base import Adapter, VisionSegment, VisionTokens

MAX_QUESTION_CHARS = 4000


def check_question(question: str) -> str:
    """A question the model can take, or a ConfigError that says what is wrong."""
    if not isinstance(question, str) or not question.strip():
        raise ConfigError("the question is empty; ask something about the scene")
    if len(question) > MAX_QUESTION_CHARS:
        raise ConfigError(
            f"the question is {len(question):,} characters long; the limit is "
            f"{MAX_QUESTION_CHARS:,} (shorten it)"
        )
    try:
        question.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            "the question is not valid UTF-8 text; re-type it or fix its encoding"
        ) from None
    return question


class Pipeline:
    """One loaded model and the stage configs; ``ask`` answers questions about scenes."""

    def __init__(
        self,
        adapter: Adapter,
        *,
        focus: FocusConfig | None = None,
        prune: PruneConfig | None = None,
        pyramid: PyramidConfig | None = None,
        max_new_tokens: int | None = None,
        progress: bool = False,
        max_scenes: int = 2,
        preset: str | None = None,
    ):
        self.adapter = adapter
        # A preset resolves every setting for this model; configs given beside it win.
        self.preset: Preset | None = resolve_preset(preset, adapter) if preset else None
        if self.preset is not None:
            adapter.use_input_format(self.preset.input_format)
            focus = focus or self.preset.focus
            prune = prune or self.preset.prune
            pyramid = pyramid or self.preset.pyramid
            max_new_tokens = max_new_tokens or self.preset.max_new_tokens
        max_new_tokens = 32 if max_new_tokens is None else max_new_tokens
        #: The LLM input format this pipeline's answers use; ``ask`` sets it on the adapter
        #: whenever another pipeline on the same model changed it (a preset's or stock).
        self.input_format = self.preset.input_format if self.preset else InputFormat()
        caps = adapter.capabilities
        self.focus = focus or FocusConfig()
        self.prune = prune or PruneConfig()
        # Tiles and thumbnail follow the model: its tile size and base input size (the
        # release's levels keep their 336 px blocks for Qwen too: any multiple of 28 works).
        base = pyramid or PyramidConfig()
        if base.levels == "release" and caps.mrope:
            self.pyramid = base
        else:
            self.pyramid = replace(
                base, tile_size=caps.tile_size, thumbnail_size=caps.thumbnail_size
            )
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.max_new_tokens = max_new_tokens
        self.progress = progress
        self.sessions = SessionCache(max_scenes, progress=progress)
        newlines = self.focus.newlines == "in-softmax"
        self.scorer: TokenScorer = AttentionScorer(self.focus.layers, newlines=newlines)
        if self.focus.focus.startswith("distilled:"):
            from lrsvqa.focus.distilled import load_scorer

            distilled = load_scorer(self.focus.focus.split(":", 1)[1], adapter)
            distilled.newlines = newlines
            self.scorer = distilled
        if self.focus.selector == "rfm":
            self.scorer.resolve_layers(adapter)  # bad layer indices fail now, not mid-run
        self.prune.llm.validate(caps.num_layers)
        if caps.thumbnail_size == caps.tile_size:  # the thumbnail is one square tile
            self._check_budget(caps.n_tokens_per_tile)

    @property
    def tokens_per_tile(self) -> int:
        """LLM vision tokens of one pyramid tile (after any pooling)."""
        caps = self.adapter.capabilities
        per_side = -(-(self.pyramid.tile_size // caps.patch_size) // self.pyramid.tile_pool)
        return per_side * per_side

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | None = None,
        *,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        focus: FocusConfig | None = None,
        prune: PruneConfig | None = None,
        pyramid: PyramidConfig | None = None,
        max_new_tokens: int | None = None,
        progress: bool = False,
        preset: str | None = None,
    ) -> Pipeline:
        """Load a model by Hugging Face id (default: ``lrsvqa.models.DEFAULT_MODEL_ID``)
        or ``tiny/<family>`` (a random offline model: meaningless answers)."""
        from lrsvqa.models import DEFAULT_MODEL_ID, from_pretrained

        adapter = from_pretrained(
            model_id or DEFAULT_MODEL_ID, revision=revision, device=device, dtype=dtype
        )
        return cls(
            adapter,
            focus=focus,
            prune=prune,
            pyramid=pyramid,
            max_new_tokens=max_new_tokens,
            progress=progress,
            preset=preset,
        )

    @property
    def model_id(self) -> str:
        return self.adapter.model_id

    @property
    def revision(self) -> str | None:
        return self.adapter.revision

    def config_dict(self) -> dict[str, Any]:
        """Every stage's config plus the model's id and revision."""
        extra: dict[str, Any] = {}
        if self.preset is not None:  # only then, so older run manifests still match
            extra["preset"] = self.preset.name
            extra["input_format"] = self.adapter.input_format.to_dict()
            extra["max_new_tokens"] = self.max_new_tokens
        return {
            **extra,
            "model_id": self.adapter.model_id,
            "revision": self.adapter.revision,
            "family": self.adapter.capabilities.family,
            "pyramid": self.pyramid.to_dict(),
            "focus": self.focus.to_dict(),
            "focus_layers": list(self.scorer.resolve_layers(self.adapter))
            if self.focus.selector == "rfm"
            else None,
            "focus_scorer": self.scorer.name,
            "distilled_rfm": self.scorer.describe(),
            "prune": self.prune.to_dict(),
            "pdrop_boundaries": list(
                self.prune.llm.boundaries(self.adapter.capabilities.num_layers)
            )
            if self.prune.llm.method == "pdrop"
            else None,
            "generation": self.adapter.generation_settings(self.max_new_tokens),
        }

    def session(
        self, scene: str | os.PathLike[str] | Scene, bands: Sequence[int] | None = None
    ) -> SceneSession:
        """The cached per-scene state (opened on first use)."""
        return self.sessions.get(scene, tuple(bands) if bands else None, self.pyramid, self.adapter)

    def prefetch(
        self, scene: str | os.PathLike[str] | Scene, bands: Sequence[int] | None = None
    ) -> None:
        """Open ``scene`` and read what its first question needs (stretch, thumbnail,
        level-0 tiles), e.g. in a thread while the model answers about another scene."""
        self.session(scene, bands).pyramid.prefetch()

    def ask(
        self,
        scene: str | os.PathLike[str] | Scene,
        question: str,
        *,
        bands: Sequence[int] | None = None,
        progress: ProgressCallback | None = None,
    ) -> Answer:
        """Answer ``question`` about ``scene`` (a path, URL or open ``Scene``).

        ``progress`` is called at each stage (``lrsvqa.pipeline.progress``)."""
        check_question(question)
        if self.adapter.input_format != self.input_format:
            self.adapter.use_input_format(self.input_format)
        bar = TileBar() if progress is None and self.progress else None
        trace = Trace(progress or bar)
        try:
            n_images = 1 if self.adapter.single_placeholder else 2
            check_context(
                self.adapter, question, self.focus.token_budget, self.max_new_tokens, n_images
            )
            trace.emit("pyramid")
            session = self.session(scene, bands)
            thumbnail = trace.encoded("thumbnail", session.thumbnail(trace.watch)).tokens[0]
            self._check_budget(self.adapter.llm_vision_positions([thumbnail_segment(thumbnail)]))
            trace.levels = levels_to_visit(session.pyramid, self.focus, thumbnail.n)
            focus = select(
                session.pyramid,
                self.focus,
                thumbnail=thumbnail,
                encode=partial(self._encode, session, trace),
                score=partial(self._score, session, question, trace)
                if self.focus.selector == "rfm"
                else None,
                tokens_per_tile=self.tokens_per_tile,
            )
            trace.emit("generate")
            with trace.watch.timing("generate"):
                segments, cut = fit_budget(
                    self.adapter,
                    self._every_row(
                        session,
                        assemble_segments(
                            focus, thumbnail, self.prune, mrope=self.adapter.capabilities.mrope
                        ),
                    ),
                    self.focus.token_budget,
                    focus,
                )
                if cut:
                    focus.notes.append(
                        f"{cut} lowest-ranked tile tokens were cut so that their newline "
                        f"separators fit the budget of {self.focus.token_budget:,} vision positions"
                    )
                inputs = self.adapter.build_inputs(segments, question)
                generation, per_layer = generate_pruned(
                    self.adapter, inputs, self.prune.llm, max_new_tokens=self.max_new_tokens
                )
            cost = trace.cost_report(
                self.adapter.capabilities, self._read_layers(), inputs, per_layer, generation
            )
            trace.emit("done")
        finally:
            if bar is not None:
                bar.close()
        return Answer(
            text=generation.text.strip(),
            question=question,
            scene=session.scene.path,
            evidence=evidence_of(session.pyramid, focus),
            cost=cost,
            config=self.config_dict(),
            focus=focus,
            notes=list(focus.notes),
            pyramid_config=session.pyramid.config,
        )

    def _encode(
        self, session: SceneSession, trace: Trace, tiles: Sequence[Tile]
    ) -> list[VisionTokens]:
        """The focus stage's tile encoder: one call per level, recorded in ``trace``."""
        level = tiles[0].level if tiles else None
        trace.emit("focus", level=level)

        def batch_done(done: int, total: int) -> None:
            trace.emit("encode", level=level, done=done, total=total)

        result = session.encode_tiles(tiles, trace.watch, on_batch=batch_done)
        return trace.encoded(str(level), result).tokens

    def _score(
        self,
        session: SceneSession,
        question: str,
        trace: Trace,
        thumbnail: VisionTokens,
        tiles: Sequence[Tile],
        tokens: list[VisionTokens],
    ) -> list[np.ndarray]:
        """The focus stage's scorer: one pass over thumbnail + candidates, recorded in ``trace``."""
        compact = self.adapter.capabilities.mrope and self.prune.mrope_positions == "compact"
        with trace.watch.timing("focus"):
            keeps = [  # padding never enters the pass
                unpadded_keep(session.pyramid, tile, tok.grid)
                for tile, tok in zip(tiles, tokens, strict=True)
            ]
            segments = self._every_row(
                session,
                [
                    thumbnail_segment(thumbnail),
                    *tile_segments(tiles, tokens, keeps, compact=compact),
                ],
            )
            return trace.scored(self.scorer.score(self.adapter, segments, question)).grids

    def _every_row(
        self, session: SceneSession, segments: list[VisionSegment]
    ) -> list[VisionSegment]:
        """Under the release format every row of a level's unpadded token grid ends with a
        newline, whether or not it holds a kept token (``prune_and_construct_features``
        keeps all newline indices of the level's grid)."""
        if not self.adapter.input_format.newline_rows:
            return segments
        from lrsvqa.focus.select import level_token_extent

        out = []
        for seg in segments:
            if seg.kind == "tile":
                rows, _ = level_token_extent(session.pyramid, seg.group - 1, seg.tokens.grid)
                seg = replace(seg, frame_rows=rows)
            out.append(seg)
        return out

    def _read_layers(self) -> tuple[int, ...]:
        """Decoder layers a focus pass reads (it runs the ones below the deepest in full)."""
        return tuple(self.scorer.resolve_layers(self.adapter))

    def _check_budget(self, thumbnail_positions: int) -> None:
        """A budget below the thumbnail's positions would be overrun silently: refuse it."""
        if self.prune.thumbnail:
            check_thumbnail(thumbnail_positions, self.focus.token_budget)

    def save_overlay(
        self, answer: Answer, path: str | os.PathLike[str], *, panel_size: int = 512
    ) -> str:
        """The answer's overlay PNG, reusing this pipeline's open scene."""
        session = self.session(answer.scene)
        return answer.save_overlay(path, pyramid=session.pyramid, panel_size=panel_size)

    def close(self) -> None:
        self.sessions.clear()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ask_many(self, sources: Any, questions: Any, **options: Any) -> Any:
        """Ask every question about every scene of ``sources`` (files, globs, folders,
        lists, STAC); yield answers as they finish (``lrsvqa.pipeline.many.ask_many``)."""
        from lrsvqa.pipeline.many import ask_many

        for question in [questions] if isinstance(questions, str) else questions:
            check_question(question)
        return ask_many(self, sources, questions, **options)


def ask(
    scene: str | os.PathLike[str],
    question: str,
    *,
    model: str | None = None,
    focus: FocusConfig | None = None,
    device: str = "auto",
) -> Answer:
    """One-shot shortcut: load ``model`` and answer one question about ``scene``."""
    with Pipeline.from_pretrained(model, focus=focus, device=device) as pipeline:
        return pipeline.ask(scene, question)
