"""``lrsvqa serve``: the map page and JSON API over one loaded model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from lrsvqa.cli.ask_cmd import build_pipeline, model_options


@click.command()
@model_options
@click.option(
    "--root",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder of the scenes offered (nothing outside it is ever opened).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--token",
    default=None,
    help="Bearer token every API request must send (default: $LRSVQA_TOKEN). "
    "Required to bind an address other than loopback.",
)
@click.option(
    "--allow-url",
    "allow_urls",
    multiple=True,
    metavar="PREFIX",
    help="Also accept scene URLs starting with PREFIX (repeatable).",
)
@click.option(
    "--cors", multiple=True, metavar="ORIGIN", help="Allow this browser origin (repeatable)."
)
@click.option(
    "--queue",
    "max_queue",
    default=16,
    show_default=True,
    type=int,
    help="Questions that may wait behind the running one; more get 429.",
)
@click.option(
    "--keep-jobs", default=500, show_default=True, type=int, help="Finished results kept."
)
def serve(
    root: str,
    host: str,
    port: int,
    token: str | None,
    allow_urls: tuple[str, ...],
    cors: tuple[str, ...],
    max_queue: int,
    keep_jobs: int,
    **model_kw: Any,
) -> None:
    """Serve a map page where analysts ask about scenes under --root and see the evidence."""
    from lrsvqa.errors import ConfigError

    try:
        import uvicorn

        from lrsvqa.serve import TOKEN_ENV, ServeConfig, check_bind, create_app
    except ImportError as exc:
        raise ConfigError(
            f"lrsvqa serve needs the 'serve' extra ({exc.name} is missing): "
            "pip install 'lrsvqa[serve]'"
        ) from None

    token = token or os.environ.get(TOKEN_ENV) or None
    check_bind(host, token)  # before the model loads: a refused bind fails in a second
    config = ServeConfig(
        root=Path(root),
        allow_urls=allow_urls,
        token=token,
        cors=cors,
        max_queue=max_queue,
        keep_jobs=keep_jobs,
        max_new_tokens=max(int(model_kw.get("max_new_tokens") or 32), 32),
    )
    pipeline = build_pipeline(progress=False, **model_kw)
    if pipeline.model_id.startswith("tiny/"):
        click.echo(
            f"note: {pipeline.model_id} is a tiny random model: its answers are meaningless",
            err=True,
        )
    app = create_app(pipeline, config)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"lrsvqa serve: http://{shown}:{port}/  (scenes under {config.root})", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
    finally:
        pipeline.close()
