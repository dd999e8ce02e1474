"""``mtst-eval``: score a bundle (every precision variant and layout) or a checkpoint on labelled files.

::

    mtst-eval bundles/main --data-root ../shared/data \\
        --data intent=banking77/test.csv --data ner=conll2003/test.txt --data sentiment=sst2/dev.tsv \\
        --ood clinc=clinc150/data_full.json#oos_test --report json > eval.json

Only option parsing and printing here; :mod:`mtst.experiment.eval_run` and :mod:`~mtst.experiment.scoring`
do the work. A bundle is run
by the torch-free runtime (torch is never imported); ``--checkpoint CKPT`` scores the torch model.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from mtst.errors import MtstError

__all__ = ["main", "render_table"]

logger = logging.getLogger(__name__)


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise click.BadParameter(f"{v!r}: expected HEAD=VALUE", param_hint=option)
        out[key.strip()] = value.strip()
    return out


def _thresholds(values: tuple[str, ...]) -> dict[str, float] | None:
    out: dict[str, float] = {}
    for head, raw in _pairs(values, "--threshold").items():
        try:
            out[head] = float(raw)
        except ValueError:
            out[head] = math.nan
        if not 0.0 <= out[head] <= 1.0:
            raise click.BadParameter(f"{head}={raw}: expected a value in [0, 1]", param_hint="--threshold")
    return out or None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4f}"
    return str(v)


_SENTENCE_COLS = ("examples", "accuracy", "macro_f1", "ece", "brier", "coverage", "selective_accuracy")
_TOKEN_COLS = ("examples", "precision", "recall", "f1", "f1_all", "ece", "brier", "coverage")


def render_table(report: Mapping[str, Any]) -> str:
    """Markdown tables of a report: per variant, each head on its own data, then what it declines."""
    lines: list[str] = []
    for key, r in report["variants"].items():
        lines += [f"## {key}", ""]
        for cols in (_SENTENCE_COLS, _TOKEN_COLS):
            rows = [(h, m) for h, m in r["heads"].items() if (("accuracy" in m) == (cols is _SENTENCE_COLS))]
            if not rows:
                continue
            lines += [
                "| head | data | threshold | " + " | ".join(cols) + " |",
                "|---|---|---:|" + "---:|" * len(cols),
            ]
            for h, m in rows:
                cells = [h, m["data"], _fmt(r["thresholds"][h]), *(_fmt(m.get(c, math.nan)) for c in cols)]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        if r["cross"]:
            lines += [
                "| head | other data | examples | declined | AUROC | FPR@95%TPR |",
                "|---|---|---:|---:|---:|---:|",
            ]
            for h, cells in r["cross"].items():
                for data, c in cells.items():
                    row = [h, data, _fmt(c["examples"]), _fmt(c["declined"])]
                    row += [_fmt(c.get("auroc", math.nan)), _fmt(c.get("fpr_at_95_tpr", math.nan))]
                    lines.append("| " + " | ".join(row) + " |")
            lines.append("")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Score a torch checkpoint instead (needs mtst[train]).",
)
@click.option(
    "--data",
    "data",
    multiple=True,
    metavar="HEAD=PATH[#SPLIT]",
    help="Labelled file of a head (repeatable); #SPLIT: a key of a JSON split file.",
)
@click.option(
    "--ood",
    "ood",
    multiple=True,
    metavar="HEAD=PATH[#SPLIT]",
    help="Texts the head should decline (repeatable; *=PATH: every head); labels, if any, are ignored.",
)
@click.option(
    "--format",
    "formats",
    multiple=True,
    metavar="HEAD=FORMAT",
    help="Data format of a head's files whose suffix says nothing (conll, csv, tsv, jsonl, json, lines).",
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder relative data paths are read from (default: the working directory).",
)
@click.option("--limit", type=click.IntRange(min=1), help="At most N examples a file (a seeded sample).")
@click.option(
    "--variant",
    "variants",
    multiple=True,
    metavar="PRECISION/LAYOUT",
    help="Variants to score (default: every variant with an encoder).",
)
@click.option("--provider", "-p", "providers", multiple=True, help="Execution provider chain (default: cpu).")
@click.option(
    "--threshold",
    "thresholds",
    multiple=True,
    metavar="HEAD=VALUE",
    help="Override a head's abstention threshold.",
)
@click.option(
    "--no-abstain",
    is_flag=True,
    help="Score with thresholds off (every sentence answered, every entity kept).",
)
@click.option(
    "--report", "report_format", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr (only on a terminal).")
@click.option("-v", "--verbose", count=True, help="-v: info logging on stderr.")
def main(
    bundle: Path | None,
    checkpoint: Path | None,
    data: tuple[str, ...],
    ood: tuple[str, ...],
    formats: tuple[str, ...],
    data_root: Path | None,
    limit: int | None,
    variants: tuple[str, ...],
    providers: tuple[str, ...],
    thresholds: tuple[str, ...],
    no_abstain: bool,
    report_format: str,
    progress: bool,
    verbose: int,
) -> None:
    """Score BUNDLE (each variant) or --checkpoint on labelled --data files and out-of-domain --ood files."""
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 1), format="%(message)s", stream=sys.stderr)
    if (bundle is None) == (checkpoint is None):
        raise click.UsageError("give a BUNDLE or --checkpoint CKPT (one of them)")
    try:
        options = {"thresholds": _thresholds(thresholds), "abstain": not no_abstain}
        files_args = {"formats": _pairs(formats, "--format"), "data_root": data_root, "limit": limit}
        from mtst.experiment.eval_run import score_bundle, score_checkpoint

        def bar(total: int, desc: str) -> Any:
            return _bar(total, desc, progress)

        if bundle is not None:
            report = score_bundle(
                bundle, data, ood, variants=variants, providers=providers, bar=bar, **options, **files_args
            )
        else:
            assert checkpoint is not None
            report = score_checkpoint(checkpoint, data, ood, bar=bar, **options, **files_args)
    except MtstError as exc:
        raise click.ClickException(str(exc)) from None
    if report_format == "json":
        click.echo(json.dumps(report, indent=2, ensure_ascii=False, default=_json_default))
    else:
        click.echo(render_table(report))


def _json_default(v: Any) -> Any:
    raise TypeError(f"not JSON-serializable: {type(v).__name__}")


def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit="text", file=sys.stderr, disable=not (enabled and sys.stderr.isatty())
    )


if __name__ == "__main__":  # pragma: no cover - python -m mtst.experiment.eval_cli
    main()
