"""``mtst-experiment``, and the compare run that ``mtst-train --compare-separate`` hands over to.

Only click commands here: parse options, load the config, call :func:`mtst.experiment.run.run_experiment`.
``python -m mtst.experiment.cli compare-separate CONFIG [mtst-train options]`` runs :func:`compare_main`.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from mtst.cli import (
    TrainOptions,
    data_root_option,
    need_torch,
    set_option,
    setup_logging,
    train_options,
    verbosity_options,
)
from mtst.errors import MtstError

__all__ = ["compare_main", "main"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Experiment directory (default: runs/<experiment name>).",
)
@data_root_option
@click.option(
    "--only",
    multiple=True,
    metavar="NAME[,NAME]",
    help="Run and report only these variants (repeatable or comma-separated).",
)
@click.option("--resume", is_flag=True, help="Keep finished variants, continue interrupted training runs.")
@set_option("Override a value of the base run config for every variant, e.g. optim.epochs=2.")
@verbosity_options
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
    need_torch()
    setup_logging(verbose, quiet)
    from mtst.experiment.config import load_experiment
    from mtst.experiment.run import run_experiment

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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@train_options
def compare_main(options: TrainOptions) -> None:
    """``mtst-train CONFIG --compare-separate``: the multi-task model against one model per task."""
    need_torch()
    setup_logging(options.verbose, options.quiet)
    from mtst.experiment.compare import compare_experiment, write_compare
    from mtst.experiment.run import run_experiment

    try:
        cfg, out = options.load()
        exp = compare_experiment(cfg, path=options.config, device=options.device)
        command = [shlex.quote(c) for c in ["mtst-train", *options.args(), "--compare-separate"]]
        run_experiment(exp, out, resume=options.resume, command=command, report=write_compare)
    except MtstError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo((out / "compare.md").read_text(encoding="utf-8"))
    click.echo(f"written: {out / 'compare.md'}, {out / 'compare.json'}")


if __name__ == "__main__":  # pragma: no cover - python -m mtst.experiment.cli [compare-separate] ...
    if sys.argv[1:2] == ["compare-separate"]:
        compare_main(sys.argv[2:], prog_name="mtst-train --compare-separate")
    else:
        main()
