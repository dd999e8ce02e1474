"""``mtst-eval``'s runs: every chosen variant of a bundle (torch-free) or a checkpoint's torch model on
the ``--data``/``--ood`` files, one report (:func:`mtst.experiment.scoring.score_predictor` per variant)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mtst.errors import ConfigError
from mtst.experiment.scoring import EvalFile, read_eval_files, score_predictor

__all__ = ["score_bundle", "score_checkpoint"]

Bar = Callable[[int, str], Any]  # (total, description) -> a context manager with .update(n)


def _no_bar(total: int, desc: str) -> Any:
    class _Quiet:
        def update(self, n: int) -> None:
            pass

    return contextlib.nullcontext(_Quiet())


def _files_summary(files: Sequence[EvalFile]) -> list[dict[str, Any]]:
    return [
        {"head": f.task, "file": f.name, "texts": len(f.texts), "labelled": f.examples is not None}
        for f in files
    ]


def score_bundle(
    bundle: Path,
    data: Sequence[str],
    ood: Sequence[str],
    *,
    variants: Sequence[str] = (),
    providers: Sequence[str] = (),
    thresholds: Mapping[str, float] | None = None,
    abstain: bool = True,
    formats: Mapping[str, str] | None = None,
    data_root: Path | None = None,
    limit: int | None = None,
    bar: Bar = _no_bar,
) -> dict[str, Any]:
    """Every variant (default: all with an encoder) of ``bundle`` scored on the files."""
    from mtst.experiment.predictors import EnginePredictor, HeadView
    from mtst.runtime.bundle import load_bundle
    from mtst.runtime.engine import Engine
    from mtst.runtime.manifest import HeadKind, Layout

    manifest = load_bundle(bundle).manifest
    have = [v.key for v in manifest.variants if v.layout is not Layout.HEADS]
    chosen = list(variants) or have
    unknown = [v for v in chosen if v not in have]
    if unknown:
        raise ConfigError(f"--variant {unknown}: not in {bundle} (it has {have})")
    report: dict[str, Any] = {"bundle": str(bundle), "variants": {}}
    files: list[EvalFile] | None = None
    for key in chosen:
        precision, layout = key.split("/")
        engine = Engine.load(bundle, providers=list(providers) or ["cpu"], precision=precision, layout=layout)
        predictor = EnginePredictor(engine, thresholds=thresholds, abstain=abstain)
        if files is None:  # the heads are the same in every variant
            views = {
                n: HeadView("sentence" if h.kind is HeadKind.SENTENCE else "token", h.labels, 0.0)
                for n, h in engine.heads.items()
            }
            training = manifest.provenance.get("training_config")
            files = read_eval_files(
                data, ood, views, formats=formats, data_root=data_root, training_config=training, limit=limit
            )
            report["data"] = _files_summary(files)
        with bar(sum(len(f.texts) for f in files), key) as b:
            report["variants"][key] = {
                "providers": [p.value for p in engine.active_providers],
                **score_predictor(predictor, files, progress=b.update),
            }
    return report


def score_checkpoint(
    checkpoint: Path,
    data: Sequence[str],
    ood: Sequence[str],
    *,
    thresholds: Mapping[str, float] | None = None,
    abstain: bool = True,
    formats: Mapping[str, str] | None = None,
    data_root: Path | None = None,
    limit: int | None = None,
    bar: Bar = _no_bar,
) -> dict[str, Any]:
    """The checkpoint's torch model scored on the files (needs mtst[train])."""
    from mtst.checkpoint import read_meta
    from mtst.experiment.predictors import TorchPredictor

    predictor = TorchPredictor(checkpoint, thresholds=thresholds, abstain=abstain)
    training = read_meta(checkpoint).get("config")
    files = read_eval_files(
        data,
        ood,
        predictor.heads,
        formats=formats,
        data_root=data_root,
        training_config=training,
        limit=limit,
    )
    report: dict[str, Any] = {"checkpoint": str(checkpoint), "variants": {}, "data": _files_summary(files)}
    with bar(sum(len(f.texts) for f in files), "torch") as b:
        report["variants"]["torch"] = score_predictor(predictor, files, progress=b.update)
    return report
