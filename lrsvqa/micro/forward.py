"""One differentiable pass of the micro model over an example, exactly as ``ask`` builds it.

The sequence layout (placeholders, M-RoPE ids of kept tokens, text positions) comes from the
adapter's own ``build_inputs``; only the embeddings are rebuilt here so that gradients reach
the vision tower. The grounding term reads the focus layer's attention with the same
primitive the Region Focus Module uses (``lrsvqa.models.attention.layer_attention``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lrsvqa.models.attention import layer_attention
from lrsvqa.models.base import VisionSegment, VisionTokens

if TYPE_CHECKING:
    from lrsvqa.micro.data import Example
    from lrsvqa.models.hf import HFAdapter


@dataclass
class Losses:
    answer: torch.Tensor | None
    grounding: torch.Tensor | None
    answer_correct: bool | None = None
    target_share: float | None = None  # attention share on the targets (after renormalising)
    readout: torch.Tensor | None = None  # the asked-about object's class/colour at the last token
    count: torch.Tensor | None = None  # how many objects the question is about, at the last token
    chance_share: float | None = None  # the share a uniform attention would give
    null: torch.Tensor | None = None  # about no object: -log(share of attention off the image)
    vision_mass: float | None = None  # the focus layer's attention share on all vision tokens
    present: torch.Tensor | None = None  # presence, class present: -log(share on its tokens)
    present_mass: float | None = None  # the focus layer's attention share on those tokens
    count_mass: torch.Tensor | None = None  # count: share on the objects' centres vs n/(n+1)
    centre_mass: float | None = None  # the focus layer's attention share on those centres
    centre_goal: float | None = None  # n / (n + 1) for the n objects centred in kept tokens


def encode_with_grad(adapter: HFAdapter, images: list[np.ndarray]) -> list[torch.Tensor]:
    """Vision tokens (64, hidden) per image, with gradients to the vision tower."""
    batch = adapter.processor.image_processor(
        images=[adapter.to_pil(im) for im in images], return_tensors="pt"
    )
    feats = adapter.model.model.get_image_features(
        pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"], return_dict=True
    ).pooler_output
    return list(feats)


@dataclass
class TokenLosses:
    """The token probe's terms: ``probe`` (class, colour and surface under each token) and
    ``centre`` (how many objects are centred in each token's cell; None when the head has
    no centre outputs), so that the trainer weights each with its own option."""

    probe: torch.Tensor
    centre: torch.Tensor | None = None


def head_slices(head: torch.nn.Module) -> dict[str, slice]:
    """Where each part of a ``probe_head``'s outputs lies: ``class`` (with "no object" first
    for the token probe), ``colour``, ``surface``, ``centre`` and ``count`` (empty slices
    for the parts the head lacks)."""
    from lrsvqa.testing.world import COLOURS

    sizes = {
        "class": int(head.n_classes) + int(getattr(head, "background", False)),  # type: ignore[arg-type]
        "colour": len(COLOURS),
        "surface": int(getattr(head, "n_surfaces", 0)),
        "centre": int(getattr(head, "n_centres", 0)),
        "count": int(getattr(head, "n_counts", 0)),
    }
    out: dict[str, slice] = {}
    start = 0
    for name, size in sizes.items():
        out[name] = slice(start, start + size)
        start += size
    return out


def token_losses(
    head: torch.nn.Module, feats: list[torch.Tensor], examples: list[Example]
) -> TokenLosses | None:
    """Auxiliary loss on every vision token: which object class (or none) and which colour
    lies under it, on which surface (water, rural or urban land) and, when the head has
    centre outputs, how many objects are centred in it: one mark per object for the LLM to
    count. A training-only probe (``head``, not part of the model) that gives the vision
    tower dense supervision; the shipped model is the stock architecture alone. None when
    no example carries token labels."""
    rows: list[torch.Tensor] = []
    classes: list[torch.Tensor] = []
    colours: list[torch.Tensor] = []
    surfaces: list[torch.Tensor] = []
    centres: list[torch.Tensor] = []
    i = 0
    for e in examples:
        n = len(e.images)
        if e.labels is not None and e.colours is not None:
            rows.extend(feats[i : i + n])
            classes.extend(torch.as_tensor(c) for c in e.labels)
            colours.extend(torch.as_tensor(c) for c in e.colours)
            if e.surfaces is not None:
                surfaces.extend(torch.as_tensor(c) for c in e.surfaces)
            if e.centres is not None:
                centres.extend(torch.as_tensor(c) for c in e.centres)
        i += n
    if not rows:
        return None
    x = torch.cat(rows)
    cls_t = torch.cat(classes)
    col_t = torch.cat(colours)
    logits = head(x)
    part = head_slices(head)
    weight = torch.ones(part["class"].stop - part["class"].start)
    weight[0] = 0.1  # most cells are background
    loss = torch.nn.functional.cross_entropy(logits[:, part["class"]], cls_t, weight=weight)
    on = col_t > 0
    if on.any():
        loss = loss + torch.nn.functional.cross_entropy(logits[on, part["colour"]], col_t[on] - 1)
    if part["surface"].stop > part["surface"].start and len(surfaces) == len(rows):
        loss = loss + torch.nn.functional.cross_entropy(
            logits[:, part["surface"]], torch.cat(surfaces)
        )
    centre = None
    if part["centre"].stop > part["centre"].start and len(centres) == len(rows):
        centre = torch.nn.functional.cross_entropy(logits[:, part["centre"]], torch.cat(centres))
    return TokenLosses(loss, centre)


#: Surfaces the token probe names (``data._surfaces``' ids).
SURFACES = ("water", "rural", "urban")


#: Counts the count readout names: 0 .. the most objects of one class a world holds.
COUNTS = 8


def probe_head(
    hidden: int, *, background: bool = True, centres: bool = False, counts: bool = False
) -> torch.nn.Module:
    """A linear head over class (plus "no object" first when ``background``) and colour;
    the token probe (``background``) names the surface under the token too, and with
    ``centres`` how many objects are centred in its cell (0 .. ``data.CENTRE_MAX``); the
    readout with ``counts`` names how many objects the question is about (0 .. 7)."""
    from lrsvqa.micro.data import CENTRE_MAX
    from lrsvqa.testing.world import CLASSES, COLOURS

    n_surf = len(SURFACES) if background else 0
    n_cen = CENTRE_MAX + 1 if centres else 0
    n_count = COUNTS if counts else 0
    head = torch.nn.Linear(
        hidden, int(background) + len(CLASSES) + len(COLOURS) + n_surf + n_cen + n_count
    )
    head.n_classes = len(CLASSES)  # type: ignore[assignment]
    head.background = background  # type: ignore[assignment]
    head.n_surfaces = n_surf  # type: ignore[assignment]
    head.n_centres = n_cen  # type: ignore[assignment]
    head.n_counts = n_count  # type: ignore[assignment]
    return head


def readout_head(hidden: int, *, counts: bool = False) -> torch.nn.Module:
    """The readout probe's head: the asked-about object's class and colour (no background),
    and with ``counts`` how many objects the question is about."""
    return probe_head(hidden, background=False, counts=counts)


def segments_for(example: Example, feats: list[torch.Tensor]) -> list[VisionSegment]:
    """[thumbnail] + tiles, as ``prune.assemble_segments`` lays them out for the LLM."""
    grid = (8, 8)
    segs = [VisionSegment(VisionTokens(feats[0].detach(), grid), None, (0, 0), 0, "thumbnail")]
    for feat, offset, keep in zip(feats[1:], example.offsets, example.keeps, strict=True):
        segs.append(
            VisionSegment(
                VisionTokens(feat.detach(), grid),
                torch.as_tensor(keep, dtype=torch.long),
                offset,
                example.level + 1,
                "tile",
            )
        )
    return segs


def target_attributes(example: Example) -> tuple[int, int]:
    """Class id and colour id (0: none) most common under the asked-about objects' cells
    in the example's tiles."""
    classes: list[int] = []
    colours: list[int] = []
    if example.labels is None or example.colours is None:
        return 0, 0
    for k, cells in enumerate(example.targets, start=1):
        if len(cells):
            classes += [int(c) for c in example.labels[k][cells] if c > 0]
            colours += [int(c) for c in example.colours[k][cells] if c > 0]
    pick = lambda ids: max(set(ids), key=ids.count) if ids else 0  # noqa: E731
    return pick(classes), pick(colours)


def readout_loss(
    head: torch.nn.Module, logits: torch.Tensor, example: Example
) -> torch.Tensor | None:
    """Training-only probe on the LLM's last prompt position (``logits``: ``head`` applied
    to its hidden state): it must name the class and colour of the object the question is
    about, so the LLM learns to carry what its attention lands on to where the answer is
    read (not part of the shipped model)."""
    cls, col = target_attributes(example)
    if cls == 0:
        return None
    part = head_slices(head)
    loss = torch.nn.functional.cross_entropy(logits[None, part["class"]], torch.tensor([cls - 1]))
    if col > 0:
        loss = loss + torch.nn.functional.cross_entropy(
            logits[None, part["colour"]], torch.tensor([col - 1])
        )
    return loss


def count_loss(
    head: torch.nn.Module, logits: torch.Tensor, example: Example
) -> torch.Tensor | None:
    """Training-only count readout at the last prompt position (``logits``: ``head``
    applied to its hidden state): how many objects a count or presence question is about
    (an absent class: 0), so that "is there a ship?" teaches the count that "how many
    ships?" asks for; None for other questions or a head without count outputs."""
    part = head_slices(head)["count"]
    n_count = part.stop - part.start
    if not n_count or example.n_targets is None:
        return None
    target = torch.tensor([min(example.n_targets, n_count - 1)])
    return torch.nn.functional.cross_entropy(logits[None, part], target)


@torch.no_grad()
def focus_scores(
    adapter: HFAdapter, example: Example, feats: list[torch.Tensor], focus_layer: int
) -> list[np.ndarray]:
    """Per tile, the (64,) focus scores of ``example``'s tiles' tokens from a focus pass over
    all their tokens inside the image (0 outside it), by the Region Focus Module's own
    scorer: what ``ask`` ranks to choose the tokens an answer pass keeps."""
    from dataclasses import replace

    from lrsvqa.focus.scoring import AttentionScorer

    if example.inside is None:
        raise ValueError("the example has no inside masks (data from before focus_fill)")
    full = replace(example, keeps=list(example.inside), answer=None)
    result = AttentionScorer([focus_layer]).score(
        adapter, segments_for(full, feats), example.question
    )
    return [np.asarray(g, dtype=np.float64).ravel() for g in result.grids]


def focus_filled(example: Example, scores: list[np.ndarray]) -> Example:
    """``example`` with its answer pass's kept tokens chosen as at inference: the asked-about
    objects' cells first (as in the data), then the other tokens the model's focus ranks
    highest (``scores``, from ``focus_scores``) instead of random ones: for a class absent
    from the scene these are exactly the tokens ``ask`` would keep."""
    from dataclasses import replace

    from lrsvqa.micro.data import GRID, pruned_keeps

    assert example.inside is not None
    flat = np.concatenate(scores)
    assert flat.shape[0] == GRID * GRID * len(scores)

    def ranked(rest: list[int]) -> list[int]:
        return sorted(rest, key=lambda x: (-flat[x], x))

    return replace(example, keeps=pruned_keeps(example.targets, example.inside, ranked))


def _on_cells(inputs: Any, per_tile: list[np.ndarray]) -> torch.Tensor:
    """(vision tokens,) bool: the tokens of tile ``k`` (segment ``k + 1``) whose raster index
    is in ``per_tile[k]``."""
    on = torch.zeros(len(inputs.vision_positions), dtype=torch.bool)
    for k, cells in enumerate(per_tile, start=1):
        if len(cells):
            on |= (inputs.vision_segment == k) & torch.isin(
                inputs.vision_index, torch.as_tensor(cells)
            )
    return on


def example_losses(
    adapter: HFAdapter,
    example: Example,
    feats: list[torch.Tensor],
    focus_layer: int,
    readout_head: torch.nn.Module | None = None,
) -> Losses:
    segments = segments_for(example, feats)
    inputs = adapter.build_inputs(segments, example.question)
    model: Any = adapter.model
    lm = adapter.language_model()
    prompt_len = inputs.length
    ids = inputs.input_ids[0]
    answer_ids: list[int] = []
    if example.answer is not None:
        tok = adapter.tokenizer
        answer_ids = tok(example.answer, add_special_tokens=False)["input_ids"] + [
            tok.convert_tokens_to_ids("<|im_end|>")
        ]
    embed = model.get_input_embeddings()
    full_ids = torch.cat([ids, torch.tensor(answer_ids, dtype=torch.long)]) if answer_ids else ids
    embeds = embed(full_ids.unsqueeze(0))[0]
    vis = inputs.vision_positions
    rows = torch.stack(
        [
            feats[int(s)][int(i)]
            for s, i in zip(inputs.vision_segment, inputs.vision_index, strict=True)
        ]
    )
    mask = torch.zeros(embeds.shape[0], 1, dtype=embeds.dtype)
    mask[vis] = 1.0
    scattered = torch.zeros_like(embeds).index_copy(0, vis, rows)
    embeds = embeds * (1 - mask) + scattered
    positions = adapter.generation_position_ids(inputs)  # (4, 1, P)
    if answer_ids:
        n = len(answer_ids)
        text_next = positions[0, 0, -1] + 1 + torch.arange(n)
        rope_next = positions[1:, 0, :].max() + 1 + torch.arange(n)
        extra = torch.stack([text_next] + [rope_next] * (positions.shape[0] - 1)).unsqueeze(1)
        positions = torch.cat([positions, extra], dim=-1)

    grab: dict[str, torch.Tensor] = {}

    def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        cos, sin = kwargs["position_embeddings"]
        sliced = dict(kwargs)
        sliced["position_embeddings"] = (cos[..., :prompt_len, :], sin[..., :prompt_len, :])
        sliced["attention_mask"] = None
        grab["att"] = layer_attention(module, hidden[:, :prompt_len], sliced)[0]  # (H, P)

    handle = lm.layers[focus_layer].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        out = lm(inputs_embeds=embeds.unsqueeze(0), position_ids=positions, use_cache=False)
    finally:
        handle.remove()
    losses = Losses(answer=None, grounding=None)
    if readout_head is not None:
        probe = readout_head(out.last_hidden_state[0, prompt_len - 1])
        losses.readout = readout_loss(readout_head, probe, example)
        losses.count = count_loss(readout_head, probe, example)
    if answer_ids:
        hidden = out.last_hidden_state[0, prompt_len - 1 : -1]
        logits = model.lm_head(hidden)
        target = torch.tensor(answer_ids, dtype=torch.long)
        losses.answer = torch.nn.functional.cross_entropy(logits.float(), target)
        losses.answer_correct = bool((logits.argmax(-1) == target).all())
    if example.n_targets == 0:  # nothing to find: the attention should leave the image
        mass = grab["att"][:, vis].sum(-1).mean()
        losses.null = -torch.log((1 - mass).clamp_min(1e-6))
        losses.vision_mass = float(mass.detach())
    if example.category == "presence" and example.n_targets:  # found: attention on it
        on_cells = _on_cells(inputs, example.targets)
        if on_cells.any():
            mass = grab["att"][:, vis[on_cells]].sum(-1).mean()
            losses.present = -torch.log(mass.clamp_min(1e-6))
            losses.present_mass = float(mass.detach())
    if example.target_centres is not None:  # counting: one share of attention per object
        kept = [
            cells[np.isin(cells, keep)]
            for cells, keep in zip(example.target_centres, example.keeps, strict=True)
        ]
        n_objects = sum(len(c) for c in kept)
        if n_objects:
            cells_at = _on_cells(inputs, kept)
            goal = n_objects / (n_objects + 1)
            on = grab["att"][:, vis[cells_at]].sum(-1).mean().clamp(1e-6, 1 - 1e-6)
            losses.count_mass = -(goal * torch.log(on) + (1 - goal) * torch.log(1 - on))
            losses.centre_mass = float(on.detach())
            losses.centre_goal = goal
    # grounding: share of the candidates' renormalised attention that falls on the targets
    cand = inputs.vision_segment >= 1
    cand_pos = vis[cand]
    on_target = _on_cells(inputs, example.targets)[cand]
    if on_target.any() and not on_target.all():
        att = grab["att"][:, cand_pos]
        att = att / att.sum(-1, keepdim=True).clamp_min(1e-30)
        share = att[:, on_target].sum(-1).mean()
        losses.grounding = -torch.log(share.clamp_min(1e-6))
        losses.target_share = float(share.detach())
        losses.chance_share = float(on_target.float().mean())
    return losses
