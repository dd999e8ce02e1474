"""The abstention measurements of docs/results.md in one command (issue 13)::

    python -m mtst.experiment.abstain configs/multitask-ood.yaml --data-root ../shared/data \\
        --output runs/abstain

1. **train** the config in an ``mtst-train`` subprocess that resumes a killed run (``cross/``: as
   configured, cross-task training on, CLINC150's oos_train as the clinc head's OOD file); with
   ``--plain`` also ``plain/`` without either (``cross_task.enabled=false``, no ``ood`` files), the
   in-domain cost of the same recipe; ``--baseline CKPT`` adds an already trained checkpoint (e.g. the
   3-head run without cross-task training) as a further comparison, scored the same way;
2. **calibrate** every best checkpoint on validation data (training does it; older runs get it here);
3. **export** each as a split bundle (cross: fp32 and int8 variants; others fp32);
4. **score** every variant with ``mtst-eval``'s scorer on every task's test split and the OOD files
   named in ``OOD_TEST`` (CLINC150's oos_test): own metrics, ECE, the cross-domain abstention matrix,
   OOS recall and AUROC;
5. **study** the choices: out-of-domain scores (max probability, energy, embedding distances) of the
   cross-task model and the baseline, and the "not mine" loss (none / outlier exposure / extra class)
   for heads retrained on the baseline's frozen embeddings (the cross-task model's without a baseline)
   (:mod:`mtst.experiment.ood_study`);
6. the README's three example sentences through each bundle's CPU default variant;

and writes ``abstain.json`` and ``abstain.md`` into the output directory. Finished steps are kept
(``--resume`` semantics are the default: a step whose output exists is not run again).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from mtst.errors import MtstError
from mtst.runtime.fsutil import atomic_write_json, atomic_write_text

__all__ = ["EXAMPLES", "OOD_TEST", "main", "run_abstention"]

logger = logging.getLogger(__name__)

EXAMPLES = (  # the README's three sentences
    "Apple opened a new office in Paris last week.",
    "I still have not received my new card, can you check?",
    "A gorgeous, witty and deeply moving film.",
)
OOD_TEST = {"clinc": "clinc150/data_full.json#oos_test"}  # test-only OOD files, by head
PLAIN = ("cross_task.enabled=false",)
STUDY_LIMIT = (
    600  # sentences per split and file in the study (a seeded sample): minutes, not an hour, on 2 cores
)


def _train(config: Path, run_dir: Path, data_root: Path, overrides: Sequence[str], log: Path) -> None:
    if (run_dir / "test_metrics.json").is_file():
        logger.info("%s: trained already", run_dir)
        return
    cmd = [sys.executable, "-m", "mtst.cli", str(config), "--output", str(run_dir), "--resume"]
    cmd += ["--data-root", str(data_root), *(x for o in overrides for x in ("--set", o)), "--quiet"]
    logger.info("training %s (log: %s)", run_dir, log)
    with open(log, "a", encoding="utf-8") as fh:
        rc = subprocess.run(
            cmd, stdout=fh, stderr=subprocess.STDOUT, check=False, env=dict(os.environ)
        ).returncode
    if rc != 0:
        raise MtstError(f"{run_dir}: mtst-train exited with {rc} (log: {log})")


def _plain_overrides(config: Path) -> list[str]:
    from mtst.config import read_config_file

    tasks = read_config_file(config).get("tasks", [])
    return [*PLAIN, *(f"tasks.{t['name']}.ood=null" for t in tasks if t.get("ood"))]


def _calibrate(checkpoint: Path, data_root: Path) -> dict[str, Any]:
    meta = json.loads((checkpoint / "mtst.json").read_text(encoding="utf-8"))
    if "calibration" not in meta:
        from mtst.calibrate import calibrate_checkpoint

        calibrate_checkpoint(checkpoint, data_root=data_root)
        meta = json.loads((checkpoint / "mtst.json").read_text(encoding="utf-8"))
    return dict(meta["calibration"])


def _export(checkpoint: Path, out: Path, quantize: Sequence[str]) -> None:
    if (out / "manifest.json").is_file():
        return
    from mtst.export import export_bundle

    logger.info("exporting %s -> %s (%s)", checkpoint, out, ", ".join(quantize))
    # no accuracy guard: the scoring below measures every variant on the full test splits anyway
    export_bundle(checkpoint, out, quantize=list(quantize), split=True, accuracy_guard=False)


def _eval_args(config: Path) -> tuple[list[str], list[str]]:
    from mtst.config import read_config_file

    data = []
    for t in read_config_file(config)["tasks"]:
        test = t.get("test")
        if test:
            src = {"path": test} if isinstance(test, str) else test
            data.append(f"{t['name']}={src['path']}" + (f"#{src['split']}" if src.get("split") else ""))
    names = {t["name"] for t in read_config_file(config)["tasks"]}
    return data, [f"{k}={v}" for k, v in OOD_TEST.items() if k in names]


def _score(bundle: Path, data: list[str], ood: list[str], data_root: Path, out: Path) -> dict[str, Any]:
    if out.is_file():
        return dict(json.loads(out.read_text(encoding="utf-8")))
    from mtst.experiment.eval_run import score_bundle
    from mtst.experiment.scoring import ANY_HEAD
    from mtst.runtime.bundle import load_bundle

    heads = {h.name for h in load_bundle(bundle).manifest.heads}
    # a test file of a task the bundle has no head for: texts every head should decline
    ood = [o for o in ood if o.partition("=")[0] in heads]
    ood += [f"{ANY_HEAD}={d.partition('=')[2]}" for d in data if d.partition("=")[0] not in heads]
    data = [d for d in data if d.partition("=")[0] in heads]
    logger.info("scoring %s", bundle)
    report = score_bundle(bundle, data, ood, data_root=data_root)
    atomic_write_json(out, report)
    return report


def _study(checkpoint: Path, config: Path, data_root: Path, out: Path, *, losses: bool) -> dict[str, Any]:
    if out.is_file():
        return dict(json.loads(out.read_text(encoding="utf-8")))
    from mtst.config import load_config
    from mtst.data import load_task_data, load_texts
    from mtst.experiment.ood_study import Features, encode_tasks, encode_texts, loss_study, score_study
    from mtst.model import load_model

    cfg = load_config(config, data_root=data_root)
    data = load_task_data(cfg)
    model = load_model(checkpoint)
    feats = encode_tasks(model, data, limit=STUDY_LIMIT)
    ood: dict[str, Features] = {}
    for head, value in OOD_TEST.items():
        if head in model.tasks:  # an OOD file is about its own head's domain
            from mtst.experiment.scoring import _source, parse_file_option

            _, path, split = parse_file_option(f"{head}={value}", "--ood")
            texts = load_texts(_source(path, split, None, None, STUDY_LIMIT), data_root=data_root)
            ood[f"{head}:{value}"] = encode_texts(model, texts)
    result: dict[str, Any] = {"scores": score_study(model, feats, ood)}
    if losses:
        sentence = [n for n, t in model.tasks.items() if t.kind.value == "sentence_classification"]
        result["losses"] = loss_study(feats, sentence)
    atomic_write_json(out, result)
    return result


def _compact(p: Any) -> dict[str, Any]:
    """A prediction as a person reads it: each sentence head's answer (None: abstained) and score,
    the entities kept."""
    from mtst.runtime.results import SentenceLabel, TokenEntities

    out: dict[str, Any] = {"text": p.text}
    for name, r in p.heads.items():
        if isinstance(r, SentenceLabel):
            out[name] = {"label": r.answer, "score": round(r.score, 3), "best_guess": r.label}
        elif isinstance(r, TokenEntities):
            out[name] = [f"{e.text}/{e.label} {e.score:.2f}" for e in r.entities]
    return out


def _examples(bundle: Path) -> dict[str, Any]:
    from mtst.runtime.engine import Engine

    engine = Engine.load(bundle, providers=["cpu"])
    preds = engine.predict(list(EXAMPLES))
    return {
        "variant": engine.variant.key,
        "predictions": [p.to_dict(embedding=False) for p in preds],
        "compact": [_compact(p) for p in preds],
    }


def _run_entry(run_dir: Path, checkpoint: Path, overrides: Sequence[str], data_root: Path) -> dict[str, Any]:
    """What a run's report holds before scoring: training figures (if it was trained here) and calibration."""
    entry: dict[str, Any] = {"checkpoint": str(checkpoint), "overrides": list(overrides)}
    entry["calibration"] = _calibrate(checkpoint, data_root)
    meta = json.loads((checkpoint / "mtst.json").read_text(encoding="utf-8"))
    entry["validation"] = meta.get("metrics", {}).get("validation", {})
    results = run_dir / "results.json"
    if results.is_file():
        trained = json.loads(results.read_text(encoding="utf-8"))
        entry.update(steps=trained["steps"], train_time_s=trained["train_time_s"], test=trained["test"])
    return entry


def run_abstention(
    config: Path,
    out: Path,
    *,
    data_root: Path,
    plain: bool = False,
    baseline: Path | None = None,
    study: bool = True,
) -> dict[str, Any]:
    """Every step of the module docstring; returns (and writes) ``abstain.json``."""
    from mtst.experiment.abstain_report import write_markdown

    out.mkdir(parents=True, exist_ok=True)
    data_root = data_root.resolve()
    trained = {"cross": ()} | ({"plain": tuple(_plain_overrides(config))} if plain else {})
    result: dict[str, Any] = {"config": str(config), "runs": {}}
    for name, overrides in trained.items():
        _train(config, out / name, data_root, overrides, out / f"{name}.log")
        result["runs"][name] = _run_entry(out / name, out / name / "best", overrides, data_root)
    if baseline is not None:
        result["runs"]["baseline"] = _run_entry(baseline.parent, baseline, (), data_root)
    data, ood = _eval_args(config)
    for name, run in result["runs"].items():
        bundle = out / f"bundle-{name}"
        _export(Path(run["checkpoint"]), bundle, ["none", "int8"] if name == "cross" else ["none"])
        run["eval"] = _score(bundle, data, ood, data_root, out / f"eval-{name}.json")
        run["examples"] = _examples(bundle)
    if study:  # the loss study on the plain encoder's features when there is one (--baseline)
        result["study"] = {
            name: _study(
                Path(run["checkpoint"]),
                config,
                data_root,
                out / f"study-{name}.json",
                losses=name == ("baseline" if baseline is not None else "cross"),
            )
            for name, run in result["runs"].items()
            if name in ("cross", "baseline")
        }
    atomic_write_json(out / "abstain.json", result)
    atomic_write_text(out / "abstain.md", write_markdown(result))
    return result


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("config", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where runs, bundles and reports go.",
)
@click.option("--data-root", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True)
@click.option("--plain", is_flag=True, help="Also train the config without cross-task training.")
@click.option(
    "--baseline",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A checkpoint trained without cross-task training, scored the same way.",
)
@click.option("--study/--no-study", default=True, help="The OOD score and loss study (step 5).")
def main(
    config: Path, output: Path, data_root: Path, plain: bool, baseline: Path | None, study: bool
) -> None:
    """Train CONFIG (cross-task; --plain also without), calibrate, export, score, study; abstain.md/json."""
    from mtst.cli import setup_logging

    setup_logging(0, False)
    try:
        run_abstention(config, output, data_root=data_root, plain=plain, baseline=baseline, study=study)
    except MtstError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo((output / "abstain.md").read_text(encoding="utf-8"))


if __name__ == "__main__":  # pragma: no cover - python -m mtst.experiment.abstain
    main()
