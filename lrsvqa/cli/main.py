"""Entry point of the ``lrsvqa`` command.

Subcommands live in their own modules and are imported only when invoked, so
``lrsvqa --help`` and ``lrsvqa inspect`` never pay for importing torch.
A user's mistake (any ``LrsvqaError``) becomes one line on stderr and exit code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from typing import Any

import click

from lrsvqa import __version__
from lrsvqa.errors import LrsvqaError

# name -> (module, attribute, one-line help). Order is the order shown in --help.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "ask": ("lrsvqa.cli.ask_cmd", "ask", "Answer a question about a scene."),
    "ask-many": ("lrsvqa.cli.ask_many_cmd", "ask_many", "Ask about many scenes → a geo table."),
    "demo": ("lrsvqa.cli.demo_cmd", "demo", "Write a sample scene and ask about it."),
    "inspect": ("lrsvqa.cli.inspect_cmd", "inspect", "Describe a scene and its pyramid plan."),
    "convert": ("lrsvqa.cli.convert_cmd", "convert", "Write a cloud-optimised GeoTIFF."),
    "sample": ("lrsvqa.cli.sample_cmd", "sample", "Write a synthetic scene with ships."),
    "score": ("lrsvqa.cli.score_cmd", "score", "Score an LRS-VQA answer file."),
    "models": ("lrsvqa.cli.models_cmd", "models", "List the supported model families."),
    "bench": ("lrsvqa.cli.bench_cmd", "bench", "Run a model over LRS-VQA (resumable, shardable)."),
    "report": (
        "lrsvqa.cli.report_cmd",
        "report",
        "Report on a benchmark run: accuracy, grounding, cost.",
    ),
    "train-rfm": ("lrsvqa.cli.train_rfm_cmd", "train_rfm", "Distil a Region Focus Module."),
    "eval-rfm": (
        "lrsvqa.cli.eval_rfm_cmd",
        "eval_rfm",
        "Compare an RFM's ranking with its teacher.",
    ),
    "convert-checkpoint": (
        "lrsvqa.cli.convert_checkpoint_cmd",
        "convert_checkpoint",
        "Convert an official LRS-VQA checkpoint to a stock LLaVA folder + RFM.",
    ),
    "serve": ("lrsvqa.cli.serve_cmd", "serve", "Serve a map page and JSON API for asking."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, spec in SUBCOMMANDS.items() if _available(spec[0])]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = SUBCOMMANDS.get(cmd_name)
        if spec is None or not _available(spec[0]):
            return None
        module = importlib.import_module(spec[0])
        command = getattr(module, spec[1])
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUBCOMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lrsvqa")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: int) -> None:
    """Ask a vision-language model about gigapixel remote-sensing images."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 1 crash, 2 bad input)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        result: Any = cli.main(args=args, prog_name="lrsvqa", standalone_mode=False)
    except LrsvqaError as exc:
        if debug:
            raise
        click.echo(f"lrsvqa: error: {_one_line(exc)}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("lrsvqa: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2 if exc.exit_code == 2 else exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except BrokenPipeError:
        return 0
    return int(result) if isinstance(result, int) else 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
