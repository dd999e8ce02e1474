"""Command lines of the training side: ``mtst-train`` and ``mtst-embed``.

Only click commands here: parse options, build the config, call one function, print its result.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mtst.errors import MtstError

if TYPE_CHECKING:
    from mtst.schema import TrainConfig

__all__ = [
    "TrainOptions",
    "calibrate_main",
    "data_root_option",
    "embed_main",
    "main",
    "need_torch",
    "set_option",
    "setup_logging",
    "train_options",
    "verbosity_options",
]

F = TypeVar("F", bound=Callable[..., object])

TORCH_HINT = "training needs PyTorch: pip install 'mtst[train]'"


def need_torch() -> None:
    if importlib.util.find_spec("torch") is None:
        raise click.ClickException(TORCH_HINT)


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", force=True)
    if verbose < 2:  # transformers' own notices (e.g. an unused pooler) are noise at the default level
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()


def _metrics_table(validation: dict[str, dict[str, float]], test: dict[str, dict[str, float]]) -> str:
    lines = ["| task | metric | validation | test |", "|---|---|---:|---:|"]
    for task, metrics in validation.items():
        for name, value in metrics.items():
            if name.startswith("f1_") or name == "token_accuracy":
                continue
            t = test.get(task, {}).get(name)
            lines.append(f"| {task} | {name} | {value:.4f} | {'–' if t is None else f'{t:.4f}'} |")
    return "\n".join(lines)


def data_root_option(f: F) -> F:
    return click.option(
        "--data-root",
        type=click.Path(file_okay=False, path_type=Path),
        help="Folder the data paths are relative to.",
    )(f)


def set_option(help: str) -> Callable[[F], F]:
    return click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=help)


def verbosity_options(f: F) -> F:
    f = click.option("--quiet", is_flag=True, help="Warnings only, no progress bar.")(f)
    return click.option("-v", "--verbose", count=True, help="More log output (-vv: also transformers').")(f)


@dataclass(frozen=True)
class TrainOptions:
    """What ``mtst-train``'s options say (the compare run it hands over to takes the same)."""

    config: Path
    resume: bool
    output: Path | None
    max_steps: int | None
    device: str | None
    data_root: Path | None
    overrides: tuple[str, ...]
    verbose: int
    quiet: bool

    def args(self) -> list[str]:
        """The command line that gives these options."""
        args = [str(self.config), *(["--resume"] if self.resume else [])]
        args += ["--output", str(self.output)] if self.output is not None else []
        args += ["--max-steps", str(self.max_steps)] if self.max_steps is not None else []
        args += ["--device", self.device] if self.device is not None else []
        args += ["--data-root", str(self.data_root)] if self.data_root is not None else []
        args += [x for o in self.overrides for x in ("--set", o)]
        return args + ["-v"] * self.verbose + (["--quiet"] if self.quiet else [])

    def load(self) -> tuple[TrainConfig, Path]:
        """The run config (file, ``--set``, ``--data-root``, ``--max-steps``) and the run directory."""
        from mtst.config import load_config

        cfg = load_config(
            self.config, overrides=self.overrides, data_root=self.data_root, max_steps=self.max_steps
        )
        return cfg, self.output if self.output is not None else Path(cfg.output_dir) / (cfg.run_id or "run")


def train_options(f: Callable[..., None]) -> Callable[..., None]:
    """Add ``mtst-train``'s options to a command, which then gets them as one ``TrainOptions``."""
    names = [field.name for field in dataclasses.fields(TrainOptions)]

    @functools.wraps(f)
    def command(**kwargs: Any) -> None:
        f(TrainOptions(**{k: kwargs.pop(k) for k in names}), **kwargs)

    options = (
        click.argument("config", type=click.Path(dir_okay=False, path_type=Path)),
        click.option(
            "--resume",
            is_flag=True,
            help="Continue the run in the output directory from its latest checkpoint.",
        ),
        click.option(
            "--output",
            type=click.Path(file_okay=False, path_type=Path),
            help="Run directory (default: output_dir/run_id).",
        ),
        click.option(
            "--max-steps", type=click.IntRange(min=1), help="Cap the number of optimizer steps (per stage)."
        ),
        click.option(
            "--device",
            type=click.Choice(["cpu", "cuda"]),
            help="Where to train (default: the config's, auto).",
        ),
        data_root_option,
        set_option("Override a config value, e.g. optim.head_lr=3e-3."),
        verbosity_options,
    )
    for option in reversed(options):
        command = option(command)
    return command


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@train_options
@click.option(
    "--compare-separate", is_flag=True, help="Also train one model per task on the same budget and compare."
)
def main(options: TrainOptions, compare_separate: bool) -> None:
    """Train a multi-task sentence transformer from a run CONFIG (YAML or TOML).

    \b
    On several processes or machines (PyTorch DDP; gloo on CPU, NCCL on GPU):
      torchrun --nproc-per-node N -m mtst.train CONFIG [OPTIONS]
      torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d --rdzv-endpoint HOST:PORT \\
               -m mtst.train CONFIG [OPTIONS]
    optim.batch_size is the global batch of one step (each process takes its part), so a run gives
    the same steps with any number of processes and --resume may change it. Rank 0 evaluates,
    writes the run directory and logs (with several machines, put --output on a shared filesystem).
    """
    need_torch()
    main_process = int(os.environ.get("RANK", "0")) == 0  # torchrun's; only rank 0 logs and prints
    if compare_separate:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise click.UsageError("--compare-separate runs in one process; start it without torchrun")
        raise SystemExit(_hand_over_compare(options.args()))
    setup_logging(options.verbose, options.quiet or not main_process)
    try:
        cfg, run_dir = options.load()
        from mtst.train import train

        result = train(
            cfg,
            run_dir=run_dir,
            resume=options.resume,
            device=options.device,
            progress=False if options.quiet else None,
        )
    except MtstError as exc:
        raise click.ClickException(str(exc)) from None
    if not main_process:
        return
    click.echo(_metrics_table(result.validation, result.test))
    click.echo(
        f"steps {result.steps} (best {result.best_step}{', stopped early' if result.stopped_early else ''}) | "
        f"train time {result.train_time_s:.1f} s | best model: {result.best_checkpoint}"
    )


def _hand_over_compare(args: Sequence[str]) -> int:
    """``--compare-separate`` is an experiment (a multitask and a separate variant): the experiment part
    runs it, in a process of its own, since the training core never imports the layers above it. Its
    table (stdout) is echoed here; its log (stderr) streams through."""
    cmd = [sys.executable, "-m", "mtst.experiment.cli", "compare-separate", *args]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    click.echo(proc.stdout, nl=False)
    return proc.returncode


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(file_okay=False, exists=True, path_type=Path))
@data_root_option
@click.option(
    "--target", type=click.Choice(["coverage", "risk", "none"]), help="Sentence heads' threshold target."
)
@click.option("--value", type=float, help="Coverage (share answered) or risk (share wrong) to aim for.")
@click.option(
    "--token-target", type=click.Choice(["coverage", "risk", "none"]), help="The same for token heads."
)
@click.option("--token-value", type=float, help="The same for token heads.")
@verbosity_options
def calibrate_main(
    checkpoint: Path,
    data_root: Path | None,
    target: str | None,
    value: float | None,
    token_target: str | None,
    token_value: float | None,
    verbose: int,
    quiet: bool,
) -> None:
    """Fit a temperature and an abstention threshold per head of CHECKPOINT on its validation data
    (the training config's), and write them into its mtst.json."""
    need_torch()
    setup_logging(verbose, quiet)
    try:
        from mtst.calibrate import calibrate_checkpoint

        given = {"target": target, "value": value, "token_target": token_target, "token_value": token_value}
        reports = calibrate_checkpoint(
            checkpoint, data_root=data_root, targets={k: v for k, v in given.items() if v is not None}
        )
    except MtstError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        "| task | temperature | threshold | validation coverage | test ECE before -> after | test Brier before -> after |"
    )
    click.echo("|---|---:|---:|---:|---|---|")
    for name, r in reports.items():
        val, test = r.details.get("validation", {}), r.details.get("test", {})
        ece = f"{test['ece_before']:.4f} -> {test['ece_after']:.4f}" if "ece_before" in test else "–"
        brier = f"{test['brier_before']:.4f} -> {test['brier_after']:.4f}" if "brier_before" in test else "–"
        cov = f"{val['coverage']:.4f}" if val else "–"
        click.echo(f"| {name} | {r.temperature:.4f} | {r.threshold:.4f} | {cov} | {ece} | {brier} |")
    click.echo(f"written: {checkpoint / 'mtst.json'}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--model",
    "model_path",
    default=None,
    help="mtst checkpoint or Hugging Face encoder (default: all-MiniLM-L6-v2).",
)
@click.option(
    "--pooling", type=click.Choice(["mean", "cls", "max"]), default=None, help="Pooling (encoders only)."
)
@click.argument("sentences", nargs=-1, required=True)
def embed_main(model_path: str | None, pooling: str | None, sentences: tuple[str, ...]) -> None:
    """Embed SENTENCES and print the cosine-similarity matrix."""
    need_torch()
    setup_logging(0, True)
    from mtst.model import MultiTaskModel

    try:
        model = MultiTaskModel.from_pretrained(model_path, pooling=pooling)
    except MtstError as exc:
        raise click.ClickException(str(exc)) from None
    emb = model.encode(list(sentences))
    click.echo(
        f"embeddings: {emb.shape[0]} x {emb.shape[1]} float32, L2-normalized, pooling {model.pooling.value}"
    )
    sims = emb @ emb.T
    width = 7
    click.echo("cosine similarity:")
    click.echo(" " * 4 + "".join(f"{f'[{j}]':>{width}}" for j in range(len(sentences))))
    for i, s in enumerate(sentences):
        row = "".join(f"{sims[i, j]:>{width}.3f}" for j in range(len(sentences)))
        click.echo(f"{f'[{i}]':<4}{row}  {s}")


if __name__ == "__main__":  # pragma: no cover - python -m mtst.cli
    main()
