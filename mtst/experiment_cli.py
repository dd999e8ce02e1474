"""``mtst-experiment``: run an experiment config (variants of one base run config) and write the table.

Only the click command here: parse options, load the config, call :func:`mtst.experiment.run_experiment`.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from mtst.errors import MtstError

__all__ = ["main"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Experiment directory (default: runs/<experiment name>).",
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder the data paths are relative to.",
)
@click.option(
    "--only",
    multiple=True,
    metavar="NAME[,NAME]",
    help="Run and report only these variants (repeatable or comma-separated).",
)
@click.option("--resume", is_flag=True, help="Keep finished variants, continue interrupted training runs.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a value of the base run config for every variant, e.g. optim.epochs=2.",
)
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.option("--quiet", is_flag=True, help="Warnings only.")
def main(
    config: Path,
    output: Path | None,
    data_root: Path | None,
    only: tuple[str, ...],
    resume: bool,
    overrides: tuple[str, ...],
    verbose: int,
    quiet: bool,
) -> None:
    """Train, export and evaluate every variant of an experiment CONFIG; write results.md/json and plots."""
    from mtst.cli import _need_torch, _setup_logging

    _need_torch()
    _setup_logging(verbose, quiet)
    from mtst.experiment import load_experiment, run_experiment

    command = (
        ["mtst-experiment", *sys.argv[1:]] if Path(sys.argv[0]).name.startswith("mtst-experiment") else None
    )
    try:
        exp = load_experiment(config, overrides=overrides, data_root=data_root)
        out = output if output is not None else Path("runs") / exp.name
        if command is None:  # called from Python (tests): rebuild the command line from the options
            command = ["mtst-experiment", str(config), "--output", str(out)]
            command += ["--data-root", str(data_root)] if data_root else []
            command += [x for o in only for x in ("--only", o)] + (["--resume"] if resume else [])
            command += [x for o in overrides for x in ("--set", o)]
        result = run_experiment(
            exp, out, only=only or None, resume=resume, command=[shlex.quote(c) for c in command]
        )
    except MtstError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo((out / "results.md").read_text(encoding="utf-8").split("\n## ", 1)[0])
    click.echo(f"written: {out / 'results.md'}, {out / 'results.json'}, {out / 'plots'}/")
    if result.failed:
        raise click.ClickException(
            f"variant(s) failed: {', '.join(result.failed)} (see {out / 'results.md'})"
        )


if __name__ == "__main__":  # pragma: no cover - python -m mtst.experiment_cli
    main()
