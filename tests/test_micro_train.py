"""The micro model's trainer: seeded (two runs give the same weights) and resumable (a run
stopped after a checkpoint and started again ends where an uninterrupted one does)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lrsvqa.micro import train as train_mod
from lrsvqa.testing.world import make_world

SMALL = {
    "steps": 3,
    "batch": 2,
    "single_tile_worlds": 8,
    "eval_questions": 2,
    "threads": 1,
    "big_world_share": 0.0,
}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "model.safetensors")


def _steps(run: Path) -> list[int]:
    return [json.loads(r)["step"] for r in (run / "log.jsonl").read_text().splitlines() if r]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("micro") / "a"
    train_mod.train(run, checkpoint_every=1, **SMALL)
    return run


def test_a_seeded_run_is_reproduced(uninterrupted: Path, tmp_path: Path) -> None:
    again = tmp_path / "b"
    train_mod.train(again, checkpoint_every=1, **SMALL)
    a, b = _weights(uninterrupted), _weights(again)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _steps(again) == [1, 2, 3]
    assert (again / "eval.json").is_file()


def test_a_stopped_run_resumes_to_the_same_weights(
    uninterrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "c"
    real = train_mod._checkpoint

    def stop_after_step_1(path, model, head, opt, step, *args, **kwargs):  # type: ignore[no-untyped-def]
        real(path, model, head, opt, step, *args, **kwargs)
        if step == 1:
            raise KeyboardInterrupt  # killed after the checkpoint of step 1 ...

    monkeypatch.setattr(train_mod, "_checkpoint", stop_after_step_1)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(run, checkpoint_every=1, **SMALL)
    # ... with a log row written past it, as a kill between checkpoints leaves
    with (run / "log.jsonl").open("a") as log:
        log.write(json.dumps({"step": 2, "answer": 9.9}) + "\n")
    # the first process trained for an hour before its checkpoint of step 1
    rows = [json.loads(r) for r in (run / "log.jsonl").read_text().splitlines() if r]
    rows[0]["seconds"] = 3600.0
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(train_mod, "_checkpoint", real)
    train_mod.train(run, checkpoint_every=1, **SMALL)  # the same command again
    a, c = _weights(uninterrupted), _weights(run)
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert _steps(run) == [1, 2, 3]  # the stale row of step 2 was dropped
    seconds = [json.loads(r)["seconds"] for r in (run / "log.jsonl").read_text().splitlines()]
    assert seconds[0] == 3600.0 and 3600.0 < seconds[1] <= seconds[2] < 3600.0 + 600


def test_big_worlds_option_changes_only_the_share_it_names() -> None:
    import numpy as np

    from lrsvqa.micro.data import BIG_SIZES, SIZES, TILE, world_size

    def sizes(**kw: float) -> list[int]:
        return [world_size(np.random.default_rng(i), i, i, 10, **kw) for i in range(400)]  # type: ignore[arg-type]

    plain, big = sizes(), sizes(big_world_share=0.25)
    assert plain[:10] == big[:10] == [TILE] * 10  # the single-tile phase stays
    changed = [i for i in range(400) if plain[i] != big[i]]
    assert all(big[i] in BIG_SIZES for i in changed) and all(plain[i] in SIZES for i in changed)
    assert 0.15 < len(changed) / 390 < 0.35  # about the share asked for
    assert max(plain) == max(SIZES) < min(BIG_SIZES)


@pytest.mark.parametrize("flag", ["--big-worlds", "--single-tile-share"])
def test_a_bad_share_is_one_line_exit_2_and_makes_nothing(
    tmp_path: Path, capsys, flag: str
) -> None:
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        train_mod.main(["--out", str(out), flag, "1.5"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lrsvqa.micro.train: error: {flag} is 1.5; give a share in (0, 1)"]
    assert not out.exists()


def test_size_jitter_moves_sides_off_the_multiples_of_224_but_keeps_single_tiles() -> None:
    import numpy as np

    from lrsvqa.micro.data import BIG_SIZES, SIZES, TILE, world_size

    def sizes(**kw: float) -> list[int]:
        return [world_size(np.random.default_rng(i), i, i, 10, **kw) for i in range(400)]  # type: ignore[arg-type]

    plain, jittered = sizes(big_world_share=0.3), sizes(big_world_share=0.3, size_jitter=0.15)
    assert jittered[:10] == [TILE] * 10
    for p, j in zip(plain, jittered, strict=True):
        assert (j == TILE) if p == TILE else (0.85 * p - 1 <= j <= 1.15 * p + 1)
    others = [j for p, j in zip(plain, jittered, strict=True) if p != TILE]
    assert sum(j % TILE != 0 for j in others) > 0.9 * len(others)  # edge tiles reach past
    assert all(p in SIZES or p in BIG_SIZES for p in plain)


def test_focus_examples_hold_no_padding_tokens(tmp_path: Path) -> None:
    """As in a focus pass (``focus.padding``): a token whose cell is padding alone (black,
    past the image's edge) is never in a training sequence. The world renders no black."""
    from lrsvqa.micro.data import GRID, world_examples
    from lrsvqa.testing.world import make_world

    world = make_world(1000, seed=3)  # not a multiple of 224: edge tiles are padded
    examples = world_examples(world, 3, tmp_path)
    dropped = 0
    for e in examples:
        for image, keep in zip(e.images[1:], e.keeps, strict=True):
            cells = image.reshape(GRID, 28, GRID, 28, 3).transpose(0, 2, 1, 3, 4)
            black = (cells.reshape(GRID * GRID, -1) == 0).all(axis=1)
            assert not black[keep].any(), "a padding token reached the sequence"
            dropped += int(e.answer is None and black.any())
    assert dropped  # the scene did have padded tiles in focus examples


def test_token_probe_names_the_surface_under_each_token() -> None:
    import numpy as np
    import torch

    from lrsvqa.micro.data import Example, _surfaces
    from lrsvqa.micro.forward import probe_head, token_losses
    from lrsvqa.testing.world import make_world

    world = make_world(448, seed=1)
    s = _surfaces((0, 0, 448, 448), world).reshape(8, 8)
    centres = (np.arange(8) + 0.5) * 56
    want = np.where(centres < world.land_edge, 1 + int(world.urban), 0)
    assert (s == want[None, :]).all() and set(np.unique(s)) == {0, 1 + int(world.urban)}
    torch.manual_seed(0)
    head = probe_head(16)
    feats = [torch.randn(64, 16)]
    zero = np.zeros(64, dtype=np.int64)

    def loss(surface: np.ndarray) -> float:
        image = np.zeros((224, 224, 3), dtype=np.uint8)
        e = Example([image], [], 0, [], [], "", None, "", [zero], [zero], [surface])
        return float(token_losses(head, feats, [e]).probe)  # type: ignore[union-attr]

    assert loss(zero) != loss(zero + 2)  # the surface labels are part of the loss


def test_stop_after_ends_the_process_mid_schedule_and_the_run_continues(
    uninterrupted: Path, tmp_path: Path
) -> None:
    """--stop-after N: the model of step N of the same schedule is saved and evaluated;
    the same command without it ends where an uninterrupted run does."""
    run = tmp_path / "s"
    train_mod.train(run, checkpoint_every=1, stop_after=2, **SMALL)
    assert _steps(run) == [1, 2]
    assert (run / "eval.json").is_file() and (run / "model" / "model.safetensors").is_file()
    stopped = _weights(run)
    train_mod.train(run, checkpoint_every=1, stop_after=2, **SMALL)  # nothing left: no step
    assert _steps(run) == [1, 2] and all(
        torch.equal(stopped[k], v) for k, v in _weights(run).items()
    )
    train_mod.train(run, checkpoint_every=1, **SMALL)
    a, c = _weights(uninterrupted), _weights(run)
    assert _steps(run) == [1, 2, 3] and all(torch.equal(a[k], c[k]) for k in a)
    assert not all(torch.equal(stopped[k], c[k]) for k in c)


def test_centre_labels_mark_each_object_once_whatever_its_size() -> None:
    """The centre probe's target: one mark per object in the cell holding its centre (a
    ship spanning three cells counts once), objects under 2 px in that image not at all."""
    from lrsvqa.micro.data import CENTRE_MAX, _centres
    from lrsvqa.testing.world import make_world

    world = make_world(224, seed=5, counts={"ship": 3, "plane": 0, "storage tank": 2, "vehicle": 0})
    marks = _centres((0, 0, 224, 224), world)
    assert marks.shape == (64,) and marks.max() <= CENTRE_MAX
    visible = [o for o in world.objects if max(o.width, o.height) >= 2]
    assert int(marks.sum()) == len(visible) == 5  # nothing clipped at 3 in this world
    for obj in visible:
        cx, cy = obj.center
        assert marks[int(cy // 28) * 8 + int(cx // 28)] >= 1
    # seen from a thumbnail 100x coarser, the same objects are under 2 px: no marks
    assert _centres((0, 0, 22400, 22400), world).sum() == 0


def test_centre_term_is_its_own_loss_beside_the_token_probe() -> None:
    """--centre-weight weights the centre marks alone: token_losses hands them back apart
    from the class/colour/surface probe, and only a head with centre outputs has them."""
    import numpy as np

    from lrsvqa.micro.data import Example
    from lrsvqa.micro.forward import probe_head, token_losses

    torch.manual_seed(0)
    feats = [torch.randn(64, 16)]
    zero = np.zeros(64, dtype=np.int64)
    image = np.zeros((224, 224, 3), dtype=np.uint8)

    def example(centres: np.ndarray) -> Example:
        e = Example([image], [], 0, [], [], "", None, "", [zero], [zero], [zero])
        e.centres = [centres]
        return e

    head = probe_head(16, centres=True)
    a = token_losses(head, feats, [example(zero)])
    b = token_losses(head, feats, [example(zero + 1)])
    assert a is not None and b is not None and a.centre is not None and b.centre is not None
    assert float(a.probe) == float(b.probe)  # the marks are not in the probe's term
    assert float(a.centre) != float(b.centre)
    plain = token_losses(probe_head(16), feats, [example(zero)])
    assert plain is not None and plain.centre is None


def test_count_readout_is_trained_on_count_and_presence_questions_only(tmp_path: Path) -> None:
    """--count-weight: "is there a ship?" and "how many ships?" both train the number of
    ships at the last prompt token; other questions carry no count target."""
    from lrsvqa.micro.data import world_examples
    from lrsvqa.micro.forward import count_loss, readout_head
    from lrsvqa.testing.world import make_world

    world = make_world(224, seed=2)
    examples = world_examples(world, 2, tmp_path)
    counted = {e.category for e in examples if e.n_targets is not None}
    assert counted == {"count", "presence"}
    asked = next(e for e in examples if e.category == "count" and e.answer is not None)
    assert asked.n_targets == int(asked.answer)
    torch.manual_seed(0)
    head = readout_head(16, counts=True)
    hidden = torch.randn(16)
    with torch.no_grad():
        logits = head(hidden)
        assert count_loss(head, logits, asked) is not None
        other = next(e for e in examples if e.n_targets is None)
        assert count_loss(head, logits, other) is None
        plain = readout_head(16)
        assert count_loss(plain, plain(hidden), asked) is None  # off: no count outputs
        a, b = (float(count_loss(head, logits, e)) for e in (asked, asked))  # type: ignore[arg-type]
        # the count outputs are the head's last 8: only they decide the loss
        moved = logits.clone()
        moved[:-8] += 5.0
        assert float(count_loss(head, moved, asked)) == a  # type: ignore[arg-type]
        asked.n_targets = (asked.n_targets + 1) % 8
        assert float(count_loss(head, logits, asked)) != a == b  # type: ignore[arg-type]


def test_count_options_are_part_of_a_runs_settings(tmp_path: Path) -> None:
    """A run with the counting probes on trains (the heads have their outputs) and records
    them, so a run without them cannot resume it by mistake."""
    run = tmp_path / "c"
    train_mod.train(run, centre_weight=0.5, count_weight=1.0, **SMALL)
    settings = json.loads((run / "settings.json").read_text())
    assert settings["centre_weight"] == 0.5 and settings["count_weight"] == 1.0
    rows = [json.loads(r) for r in (run / "log.jsonl").read_text().splitlines() if r]
    assert len(rows) == SMALL["steps"]
    from lrsvqa.errors import ConfigError

    with pytest.raises(ConfigError):
        train_mod.train(run, **SMALL)


def test_a_cards_reproduce_command_gives_its_runs_settings(monkeypatch) -> None:
    """The model card's command names every setting of the shipped run for the commit it
    names; without a commit, today's trainer gets the run's settings, also those whose
    default changed after it (v9 predates --size-jitter)."""
    from lrsvqa.micro.card import render, reproduce_flags
    from lrsvqa.models.loading import micro_folder

    card = json.loads((micro_folder("micro/qwen2_vl") / "card.json").read_text())
    settings = card["settings"]

    def parsed(flags: str) -> dict:
        seen: dict = {}
        monkeypatch.setattr(train_mod, "_train_from", lambda args: seen.update(vars(args)))
        train_mod.main(["--out", "unused", "--steps", str(card["steps"]), *flags.split()])
        seen["big_world_share"] = seen.pop("big_worlds")  # the option's name
        return seen

    explicit = reproduce_flags(settings, explicit=True)
    assert card["code_commit"][:10] in render(card)
    assert f"--steps {card['steps']}{explicit}" in render(card)
    assert {k: parsed(explicit)[k] for k in settings} == settings
    today = reproduce_flags(settings)
    want = {"size_jitter": 0.0, "centre_weight": 0.0, "count_weight": 0.0, **settings}
    assert "--size-jitter 0" in today and {k: parsed(today)[k] for k in want} == want
    no_commit = {k: v for k, v in card.items() if k != "code_commit"}
    assert f"--steps {card['steps']}{today}" in render(no_commit)


def test_focus_fill_keeps_the_targets_then_what_the_focus_ranks_highest(tmp_path: Path) -> None:
    """--focus-fill: after the asked-about objects' tokens, an answer pass keeps the tokens
    the model's focus scores highest (what ``ask`` keeps), not random ones; for a class
    absent from the scene that is the focus's own top 25 %."""
    from lrsvqa.micro.data import GRID, KEEP_RATIO, world_examples
    from lrsvqa.micro.forward import focus_filled
    from lrsvqa.testing.world import make_world

    world = make_world(224, seed=2)
    examples = [e for e in world_examples(world, 2, tmp_path) if e.answer is not None]
    rng = torch.Generator().manual_seed(0)
    absent = next(e for e in examples if not any(len(t) for t in e.targets))
    present = next(e for e in examples if any(len(t) for t in e.targets))
    for e in (absent, present):
        assert e.inside is not None
        n_keep = math.ceil(KEEP_RATIO * GRID * GRID * len(e.inside))
        scores = [torch.rand(GRID * GRID, generator=rng).double().numpy() for _ in e.inside]
        filled = focus_filled(e, scores)
        kept = {(i, int(c)) for i, k in enumerate(filled.keeps) for c in k}
        targets = {(i, int(c)) for i, t in enumerate(e.targets) for c in t}
        assert len(kept) == n_keep > len(targets)
        assert targets <= kept  # the objects asked about come first, as in the data
        ranked = sorted(
            ((i, c) for i, ins in enumerate(e.inside) for c in ins if (i, c) not in targets),
            key=lambda ic: -scores[ic[0]][ic[1]],
        )
        assert kept - targets == set(ranked[: n_keep - len(targets)])
        assert filled.images is e.images and filled.targets is e.targets


def test_focus_fill_is_a_recorded_share(tmp_path: Path, capsys) -> None:
    """A run with --focus-fill trains and records it; a value outside (0, 1] is one line."""
    run = tmp_path / "f"
    train_mod.train(run, focus_fill=1.0, **SMALL)
    assert json.loads((run / "settings.json").read_text())["focus_fill"] == 1.0
    assert len(_steps(run)) == SMALL["steps"]
    capsys.readouterr()  # the run's progress bars
    out = tmp_path / "bad"
    with pytest.raises(SystemExit) as exc:
        train_mod.main(["--out", str(out), "--focus-fill", "1.5"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lrsvqa.micro.train: error: --focus-fill is 1.5; give a share in (0, 1]"]
    assert not out.exists()


def test_llm_width_builds_a_wider_llm_that_the_card_describes(tmp_path: Path, capsys) -> None:
    """--llm-width gives the LLM (and the vision merger's output) that hidden size, is part
    of the run's settings, and the card made from the run says the width and the weights'
    parameter count; a width the 32-wide heads cannot split is one line, nothing made."""
    from lrsvqa.micro.card import _parameters, render

    run = tmp_path / "w"
    train_mod.train(run, llm_width=64, **SMALL)
    config = json.loads((run / "model" / "config.json").read_text())
    text = config.get("text_config", config)
    assert text["hidden_size"] == 64 and text["num_attention_heads"] == 2
    assert config["vision_config"]["hidden_size"] == 64
    settings = json.loads((run / "settings.json").read_text())
    assert settings["llm_width"] == 64
    n = _parameters(run / "model")
    assert n == sum(t.numel() for t in _weights(run).values())
    from lrsvqa.models.loading import micro_folder

    shipped = json.loads((micro_folder("micro/qwen2_vl") / "card.json").read_text())
    card = {**shipped, "settings": settings, "parameters": n}
    text_md = render(card)
    assert "LLM 64 wide x 4 layers" in text_md and f"~{n / 1e6:.1f} M parameters" in text_md
    assert "--llm-width 64" in text_md
    capsys.readouterr()
    out = tmp_path / "bad"
    with pytest.raises(SystemExit) as exc:
        train_mod.main(["--out", str(out), "--llm-width", "100"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "lrsvqa.micro.train: error: --llm-width is 100; give a multiple of 64 (e.g. 256)"
    ]
    assert not out.exists()


@pytest.fixture(scope="module")
def seed2_examples(tmp_path_factory) -> list:
    """Every training example of the one-tile world of seed 2."""
    from lrsvqa.micro.data import world_examples

    return world_examples(make_world(224, seed=2), 2, tmp_path_factory.mktemp("w2"))


def _untrained(folder: Path):
    """An untrained micro model in training mode: its attention is spread over the
    sequence, most of which is vision tokens."""
    from lrsvqa.micro.model import build
    from lrsvqa.models import from_pretrained

    adapter = from_pretrained(str(build(folder)), device="cpu", dtype="float32")
    adapter.model.train()
    return adapter


def _shares_while_training(adapter, example, term: str, share: str, check) -> list[float]:
    """Four SGD steps on ``example``'s loss ``term`` alone; ``check(losses)`` is called at
    each; returns the attention ``share`` before each step."""
    from lrsvqa.micro.forward import encode_with_grad, example_losses
    from lrsvqa.micro.model import FOCUS_LAYER

    opt = torch.optim.SGD(adapter.model.parameters(), lr=0.5)
    shares = []
    for _ in range(4):
        losses = example_losses(
            adapter, example, encode_with_grad(adapter, example.images), FOCUS_LAYER
        )
        assert getattr(losses, term) is not None and getattr(losses, share) is not None
        check(losses)
        shares.append(getattr(losses, share))
        opt.zero_grad()
        getattr(losses, term).backward()
        opt.step()
    return shares


def test_null_term_moves_the_attention_off_the_image_for_an_absent_class(
    tmp_path: Path, seed2_examples
) -> None:
    """--null-weight: a question about no object (an absent class) has a null loss that is
    minus the log of the focus layer's attention share off the vision tokens, and training
    on it alone moves that attention off the image; a question about objects has none. The
    option is part of a run's settings."""
    from lrsvqa.micro.forward import encode_with_grad, example_losses
    from lrsvqa.micro.model import FOCUS_LAYER

    examples = seed2_examples
    absent = next(e for e in examples if e.category == "presence" and e.n_targets == 0)
    present = next(e for e in examples if e.category == "presence" and e.n_targets)
    adapter = _untrained(tmp_path / "m")
    feats = encode_with_grad(adapter, present.images)
    assert example_losses(adapter, present, feats, FOCUS_LAYER).null is None

    def check(losses) -> None:
        assert math.isclose(
            float(losses.null), -math.log(1 - losses.vision_mass), rel_tol=1e-3, abs_tol=1e-5
        )

    masses = _shares_while_training(adapter, absent, "null", "vision_mass", check)
    assert masses[0] > 0.5 and masses[-1] < masses[0] - 0.1, masses
    run = tmp_path / "n"
    train_mod.train(run, null_weight=0.5, **SMALL)
    assert json.loads((run / "settings.json").read_text())["null_weight"] == 0.5


def test_count_mass_trains_one_share_of_attention_per_counted_object(
    tmp_path: Path, seed2_examples
) -> None:
    """--count-mass-weight: a count question's example lists the cell of every asked-about
    object's centre (one entry per object), and its count-mass loss is the binary
    cross-entropy of the focus layer's attention share on those cells against n / (n + 1);
    training on it alone moves the share there. Other questions have no centres."""
    examples = seed2_examples
    counted = [e for e in examples if e.category == "count" and e.answer is not None]
    assert counted and all(e.target_centres is not None for e in counted)
    assert all(e.target_centres is None for e in examples if e.category != "count")
    asked = counted[0]
    assert asked.target_centres is not None
    n = sum(len(c) for c in asked.target_centres)
    assert n == int(asked.answer or 0) >= 1  # a single tile shows every counted object
    adapter = _untrained(tmp_path / "m")

    def check(losses) -> None:
        assert losses.centre_goal == n / (n + 1)
        m, y = losses.centre_mass, n / (n + 1)
        want = -(y * math.log(m) + (1 - y) * math.log(1 - m))
        assert math.isclose(float(losses.count_mass), want, rel_tol=1e-4)

    shares = _shares_while_training(adapter, asked, "count_mass", "centre_mass", check)
    assert abs(shares[-1] - n / (n + 1)) < abs(shares[0] - n / (n + 1)) - 0.1, shares


def test_present_term_moves_the_attention_onto_a_present_class(
    tmp_path: Path, seed2_examples
) -> None:
    """--present-weight: a presence question about a class in the tiles has a loss that is
    minus the log of the focus layer's attention share (whole sequence, not renormalised)
    on that class's tokens, and training on it alone raises the share; an absent class and
    a count question have none."""
    from lrsvqa.micro.forward import encode_with_grad, example_losses

    examples = [e for e in seed2_examples if e.answer is not None]
    present = next(e for e in examples if e.category == "presence" and e.n_targets)
    others = [
        next(e for e in examples if e.category == "count" and e.n_targets),
        next(e for e in examples if e.category == "presence" and e.n_targets == 0),
    ]
    adapter = _untrained(tmp_path / "m")
    for e in others:
        assert example_losses(adapter, e, encode_with_grad(adapter, e.images), 1).present is None

    def check(losses) -> None:
        assert math.isclose(float(losses.present), -math.log(losses.present_mass), rel_tol=1e-4)

    shares = _shares_while_training(adapter, present, "present", "present_mass", check)
    assert shares[-1] > shares[0] + 0.1, shares
