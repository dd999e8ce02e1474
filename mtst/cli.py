"""Command lines of the training side: ``mtst-train`` and ``mtst-embed``.

Only click commands here: parse options, build the config, call one function, print its result.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import click

from mtst.errors import MtstError

__all__ = ["embed_main", "main"]

TORCH_HINT = "training needs PyTorch: pip install 'mtst[train]'"


def _need_torch() -> None:
    if importlib.util.find_spec("torch") is None:
        raise click.ClickException(TORCH_HINT)


def _setup_logging(verbose: int, quiet: bool) -> None:
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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--resume", is_flag=True, help="Continue the run in the output directory from its latest checkpoint."
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory (default: output_dir/run_id).",
)
@click.option(
    "--max-steps", type=click.IntRange(min=1), help="Cap the number of optimizer steps (per stage)."
)
@click.option(
    "--device", type=click.Choice(["cpu", "cuda"]), help="Where to train (default: the config's, auto)."
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder the data paths are relative to.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. optim.head_lr=3e-3.",
)
@click.option(
    "--compare-separate", is_flag=True, help="Also train one model per task on the same budget and compare."
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv: also transformers').")
@click.option("--quiet", is_flag=True, help="Warnings only, no progress bar.")
def main(
    config: Path,
    resume: bool,
    output: Path | None,
    max_steps: int | None,
    device: str | None,
    data_root: Path | None,
    overrides: tuple[str, ...],
    compare_separate: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Train a multi-task sentence transformer from a run CONFIG (YAML or TOML)."""
    _need_torch()
    _setup_logging(verbose, quiet)
    from mtst.config import load_config

    try:
        cfg = load_config(config, overrides=overrides, data_root=data_root, max_steps=max_steps)
        run_dir = output if output is not None else Path(cfg.output_dir) / (cfg.run_id or "run")
        progress = False if quiet else None
        if compare_separate:
            from mtst.compare import compare_separate as run_compare

            report = run_compare(cfg, run_dir=run_dir, resume=resume, device=device, progress=progress)
            click.echo(report.markdown())
            click.echo(f"written: {run_dir / 'compare.md'}, {run_dir / 'compare.json'}")
            return
        from mtst.train import train

        result = train(cfg, run_dir=run_dir, resume=resume, device=device, progress=progress)
    except MtstError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(_metrics_table(result.validation, result.test))
    click.echo(
        f"steps {result.steps} (best {result.best_step}{', stopped early' if result.stopped_early else ''}) | "
        f"train time {result.train_time_s:.1f} s | best model: {result.best_checkpoint}"
    )


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
    _need_torch()
    _setup_logging(0, True)
    from mtst.model import MultiTaskModel

    try:
        model: Any = MultiTaskModel.from_pretrained(model_path, pooling=pooling)
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
