"""mtst.bench: latency, throughput, frozen-backbone, cold start and fidelity of mtst bundles, peers alongside.

::

    from mtst.bench import BenchConfig, run_benchmark, write_report
    report = run_benchmark(BenchConfig(bundles=(Path("bundle/"),), data=Path("corpus.txt"), compare=("all",)))
    write_report(report, Path("bench-out/"))

Imports the runtime (no torch); torch, the mtst training code and the peers (Optimum,
sentence-transformers) are imported only when peers or the torch fp32 reference are asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["BenchConfig", "Scenario", "run_benchmark", "write_report"]

_LAZY = {
    "BenchConfig": "mtst.bench.config",
    "Scenario": "mtst.bench.config",
    "run_benchmark": "mtst.bench.runner",
    "write_report": "mtst.bench.report",
}

if TYPE_CHECKING:  # pragma: no cover
    from mtst.bench.config import BenchConfig, Scenario
    from mtst.bench.report import write_report
    from mtst.bench.runner import run_benchmark


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mtst.bench' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
