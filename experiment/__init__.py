"""mtst experiments: variants of one run config trained, exported, evaluated on ONNX Runtime, reported.

The top floor of mtst (DESIGN.md §1): it runs ``mtst-train`` in subprocesses, exports with
:mod:`mtst.export`, evaluates through :mod:`mtst.runtime` and reads :mod:`mtst.bench`'s system facts;
nothing below imports it. ``mtst-train --compare-separate`` is an experiment too
(:mod:`mtst.experiment.compare`).

- :mod:`~mtst.experiment.config`: the experiment file, its variants and the training runs they make;
- :mod:`~mtst.experiment.run`: train and export every model, then :mod:`~mtst.experiment.evaluate`
  (test split and latency, last) and a report (:mod:`~mtst.experiment.report`);
- :mod:`~mtst.experiment.cli`: ``mtst-experiment``.
"""

from __future__ import annotations

from mtst.experiment.config import (
    ExperimentConfig,
    ExportOptions,
    LatencyConfig,
    ModelPlan,
    VariantConfig,
    VariantKind,
    load_experiment,
    model_dir,
    plan_models,
    variant_config,
)
from mtst.experiment.run import ExperimentResult, run_experiment

__all__ = [
    "ExperimentConfig",
    "ExperimentResult",
    "ExportOptions",
    "LatencyConfig",
    "ModelPlan",
    "VariantConfig",
    "VariantKind",
    "load_experiment",
    "model_dir",
    "plan_models",
    "run_experiment",
    "variant_config",
]
