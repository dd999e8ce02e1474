"""``mtst-bench``: latency, throughput, frozen-backbone, cold start and fidelity of a bundle, peers alongside."""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
from pathlib import Path

import click

from mtst.errors import MtstError

from .config import BenchConfig, parse_scenarios
from .runner import run_benchmark

__all__ = ["fp16_main", "main"]

# A short run that only checks a setup works end to end (its numbers are not worth reporting).
QUICK = {
    "realtime_sentences": 32,
    "rounds": 1,
    "warmup": 2,
    "corpus_sentences": 128,
    "corpus_rounds": 1,
    "open_loop_seconds": 0.3,
    "open_loop_trials": 3,
    "swaps": 4,
    "cold_start_runs": 1,
}


def _command_line(ctx: click.Context) -> str:
    """The command as given: the bundles, then every option not left at its default."""
    parts = [ctx.command_path, *(str(b) for b in ctx.params["bundles"])]
    for param in ctx.command.params:
        name = param.name
        if not isinstance(param, click.Option) or name is None:
            continue
        if ctx.get_parameter_source(name) is click.core.ParameterSource.DEFAULT:
            continue
        value = ctx.params[name]
        opt = max(param.opts, key=len)
        if param.count:
            parts += ["-" + "v" * int(value)] if value else []
        elif param.is_flag:
            parts.append(opt if value or not param.secondary_opts else max(param.secondary_opts, key=len))
        elif param.multiple:
            for v in value:
                parts += [opt, str(v)]
        elif value is not None:
            parts += [opt, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def _csv(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.strip() for x in values for v in x.split(",") if v.strip())


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True)
@click.option(
    "--precision",
    "precisions",
    multiple=True,
    help="Variant(s) to run: fp32, int8-static-cpu, int8-dynamic, int8-static, fp16, or all (comma-separated "
    "or repeated). "
    "Default: the one each bundle would pick for the provider.",
)
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    default=("all",),
    show_default=True,
    help="realtime, throughput, frozen-backbone, cold-start or all (comma-separated or repeated).",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Sentences, one a line. Default: the real sentences the bundle keeps in parity.json.",
)
@click.option(
    "--compare",
    multiple=True,
    help="Peers: torch, optimum (fp32 + int8 per-channel + per-tensor), optimum-fp32, optimum-int8, "
    "optimum-int8-per-tensor, st (torch + onnx), st-torch, st-onnx, ctranslate2 (int8, int8 with the "
    "CPU's best ISA forced, fp32), ctranslate2-int8, ctranslate2-int8-best-isa, ctranslate2-fp32, openvino "
    "(fp32, default precision, int8 weight-only, int8 static), openvino-fp32, openvino-default, "
    "openvino-int8-weights, openvino-int8-static, fastembed, all. Needs mtst[compare]; OpenVINO an "
    "environment of its own (scripts/openvino-env.sh, MTST_BENCH_OPENVINO_PYTHON).",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="The mtst checkpoint the bundle came from (torch fp32 reference). Default: the bundle's provenance.",
)
@click.option("--threads", type=int, default=2, show_default=True, help="Threads for every system.")
@click.option(
    "--spinning/--no-spinning", default=False, show_default=True, help="ONNX Runtime worker spinning."
)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option(
    "--sentences",
    "realtime_sentences",
    type=int,
    default=256,
    show_default=True,
    help="First N sentences for realtime, fidelity and frozen-backbone (0 = all).",
)
@click.option("--rounds", type=int, default=2, show_default=True, help="Passes over the realtime sentences.")
@click.option(
    "--warmup", type=int, default=10, show_default=True, help="Warm-up requests per system (not recorded)."
)
@click.option(
    "--corpus-sentences", type=int, default=0, show_default=True, help="Throughput corpus size (0 = all)."
)
@click.option("--corpus-rounds", type=int, default=3, show_default=True)
@click.option("--open-loop/--no-open-loop", default=True, show_default=True)
@click.option(
    "--rate",
    "open_loop_rate",
    type=float,
    help="Open-loop arrival rate, requests/s. Default: half the closed-loop capacity.",
)
@click.option(
    "--p99-target-ms",
    type=float,
    default=10.0,
    show_default=True,
    help="Open-loop p99 target of the rate search.",
)
@click.option(
    "--open-loop-seconds", type=float, default=2.0, show_default=True, help="Length of each open-loop run."
)
@click.option(
    "--swap-heads",
    type=click.Path(path_type=Path),
    help="Heads bundle to swap in (default: the bundle's own heads).",
)
@click.option("--swaps", type=int, default=20, show_default=True)
@click.option("--cold-start-runs", type=int, default=3, show_default=True)
@click.option(
    "--cpp-build",
    type=click.Path(path_type=Path, file_okay=False),
    help="The C++ runtime's build folder: mtst-cpp-predict joins the cold-start scenario.",
)
@click.option(
    "--profile/--no-profile", default=True, show_default=True, help="Where the time of a request goes."
)
@click.option(
    "--quick", is_flag=True, help="A short run to check that everything works (numbers not for reporting)."
)
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("bench-out"), show_default=True)
@click.option("--plots/--no-plots", default=True, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("-v", "--verbose", count=True)
def main(
    bundles: tuple[Path, ...],
    provider: str,
    precisions: tuple[str, ...],
    scenarios: tuple[str, ...],
    compare: tuple[str, ...],
    out: Path,
    plots: bool,
    quick: bool,
    verbose: int,
    **options: object,
) -> None:
    """Benchmark mtst BUNDLE(s) (and peers with --compare) and write report.json, report.md and plots to --out."""
    logging.basicConfig(
        level=logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG,
        format="%(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        config = BenchConfig(
            bundles=bundles,
            provider=provider,  # type: ignore[arg-type]
            precisions=_csv(precisions),
            scenarios=parse_scenarios(scenarios),
            compare=_csv(compare),
            command=_command_line(click.get_current_context()),
            **options,  # type: ignore[arg-type]
        )
        if quick:
            config = dataclasses.replace(config, **QUICK)  # type: ignore[arg-type]
        report = run_benchmark(config)
        from .report import write_report

        files = write_report(report, out, plots=plots)
    except MtstError as exc:
        raise click.ClickException(str(exc)) from None
    for t in report.targets:
        click.echo(f"{t.system:>22}  {t.target.description} {t.target.bound}: {t.verdict()}")
    for s in report.skipped:
        click.echo(f"skipped {s.name}: {s.reason}")
    click.echo(f"wrote {', '.join(str(p) for p in files.values())}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Sentences, one a line.")
@click.option("--sentences", type=int, default=200, show_default=True, help="Sentences spread over --data.")
@click.option(
    "--reference", type=click.Path(path_type=Path), help="Bundle with the fp32 variant (default: BUNDLE)."
)
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True)
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Also write the report to this JSON file.")
def fp16_main(
    bundle: Path, data: Path, sentences: int, reference: Path | None, provider: str, out: Path | None
) -> None:
    """fp16 overflow check of BUNDLE: max |diff| vs fp32, LayerNorm/softmax inf/nan or past 65504."""
    import json

    from mtst.runtime.texts import read_sentences

    from .fp16 import check_fp16

    try:
        texts = read_sentences(data, limit=sentences)
        report = check_fp16(bundle, texts, reference=reference, provider=provider).to_dict()
    except MtstError as exc:
        raise click.ClickException(str(exc)) from None
    text = json.dumps(report, indent=2)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
    click.echo(text)
    if report["overflow"]:
        raise click.ClickException(
            "fp16 overflow: inf/nan in the fp16 graph (see 'ops' and 'nonfinite_outputs')"
        )
