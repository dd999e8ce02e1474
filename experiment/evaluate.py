"""The final phase of ``mtst-experiment``: test metrics through the exported graphs, and CPU latency.

Nothing here runs before every selected model is trained and exported, and this is the only place
the experiment reads a test split (:func:`load_test_examples`).

- **Test metrics**: for each model and precision, the bundle's graph runs on ONNX Runtime's CPU
  provider and :func:`mtst.evaluation.evaluate_task` scores its logits (the same function that
  scored validation data during training), with the checkpoint's tokenizer and label order.
- **Latency**: every (model, precision) engine (:class:`mtst.runtime.Engine`, batch 1,
  ``predict([text])`` end to end: tokenization, graph, decoding) is loaded in this one process, and
  they take turns sentence by sentence, so that load on the machine hits all of them alike.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtst.data import DataSource, Example, SentenceExample, TokenExample, load_examples, load_task_data
from mtst.evaluation import LogitsFn
from mtst.experiment.config import ExperimentConfig, ModelPlan, model_dir
from mtst.experiment.events import EventLog
from mtst.runtime.fsutil import atomic_write_json
from mtst.tasks import TaskKind

__all__ = [
    "FinalEvaluation",
    "evaluate_bundle",
    "final_evaluation",
    "latency_sentences",
    "latency_texts",
    "load_test_examples",
    "measure_latency",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinalEvaluation:
    # variant -> model -> precision -> {"metrics": {task: {...}}, "examples": {task: n}, "graph", "providers", "runs"}
    test: dict[str, dict[str, dict[str, dict[str, Any]]]]
    # "method": {...}, "ms": {"variant/model/precision": [ms per sentence, in sentence order]}
    latency: dict[str, Any]


def load_test_examples(source: DataSource, kind: TaskKind, *, data_root: Path | None) -> list[Example]:
    """The one reader of test splits in the experiment (the test checks when it is called)."""
    return load_examples(source, kind, data_root=data_root)


class _OrtLogits:
    """One exported graph on ONNX Runtime (CPU), as logits functions per head for ``evaluate_task``."""

    def __init__(self, bundle_dir: Path, precision: str, *, threads: int = 0) -> None:
        import onnxruntime as ort

        from mtst.runtime import Layout, load_bundle

        bundle = load_bundle(bundle_dir)  # verified: hashes of every file
        variants = [v for v in bundle.variants(Layout.SINGLE) if v.precision.value == precision]
        if not variants:
            from mtst.errors import BundleError

            raise BundleError(
                f"{bundle_dir}: no single-graph {precision} variant (has {[v.key for v in bundle.variants()]})"
            )
        self.graph = variants[0].graphs["model"]
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = threads
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(bundle.path(self.graph)), so, providers=["CPUExecutionProvider"]
        )
        self.providers = list(self.session.get_providers())
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = {h.name: h.output for h in bundle.manifest.heads}
        self.runs = 0

    def for_task(self, task: str) -> LogitsFn:
        output = self.outputs[task]

        def fn(batch: dict[str, np.ndarray]) -> np.ndarray:
            self.runs += 1
            feeds = {k: np.ascontiguousarray(batch[k], dtype=np.int64) for k in self.inputs}
            return self.session.run([output], feeds)[0]  # type: ignore[no-any-return]

        return fn


def evaluate_bundle(
    bundle_dir: Path,
    precision: str,
    checkpoint: Path,
    examples: Mapping[str, Sequence[Example]],
    *,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Metrics of each task in ``examples`` through the ``precision`` graph of the bundle."""
    from transformers import AutoTokenizer

    from mtst.checkpoint import read_meta
    from mtst.evaluation import evaluate_task
    from mtst.tasks import TaskSpec

    meta = read_meta(checkpoint)
    specs = {t["name"]: TaskSpec.from_dict(t) for t in meta["tasks"]}
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint / "tokenizer"), use_fast=True)
    runner = _OrtLogits(bundle_dir, precision)
    metrics: dict[str, dict[str, float]] = {}
    for task, exs in examples.items():
        metrics[task] = evaluate_task(
            runner.for_task(task),
            tokenizer,
            specs[task],
            exs,
            max_seq_len=int(meta["max_seq_len"]),
            batch_size=batch_size,
        ).metrics
    return {
        "metrics": metrics,
        "examples": {t: len(e) for t, e in examples.items()},
        "graph": runner.graph,
        "providers": runner.providers,
        "runs": runner.runs,
        "evaluated_with": "onnxruntime",
    }


def final_evaluation(
    exp: ExperimentConfig, models: Mapping[str, Sequence[ModelPlan]], out: Path, *, events: EventLog
) -> FinalEvaluation:
    """Test metrics of every model and precision (cached in ``test.json`` per model), then latency."""
    from tqdm.auto import tqdm

    cache: dict[str, list[Example]] = {}
    jobs = [
        (p, prec)
        for plans in models.values()
        for p in plans
        for prec in exp.precisions_of(exp.variant(p.variant))
    ]
    test: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    bar = tqdm(total=len(jobs), desc="test split", unit="graph", disable=None, leave=False)
    with bar:
        for plan, precision in jobs:
            mdir = model_dir(out, plan)
            stored = json.loads((mdir / "test.json").read_text()) if (mdir / "test.json").is_file() else {}
            if precision not in stored:
                examples = {}
                for tc in plan.config.tasks:
                    if tc.test is None:
                        continue
                    key = json.dumps([tc.kind.value, tc.test.to_dict()], sort_keys=True)
                    if key not in cache:
                        cache[key] = load_test_examples(
                            tc.test, tc.kind, data_root=plan.config.resolved_data_root()
                        )
                        events.add("test_load", task=tc.name, path=tc.test.path, examples=len(cache[key]))
                    examples[tc.name] = cache[key]
                trained = json.loads((mdir / "trained.json").read_text())
                t0 = time.perf_counter()
                stored[precision] = evaluate_bundle(
                    mdir / "bundle", precision, Path(trained["best_checkpoint"]), examples
                )
                stored[precision]["seconds"] = round(time.perf_counter() - t0, 3)
                atomic_write_json(mdir / "test.json", stored)
                events.add(
                    "test_eval",
                    variant=plan.variant,
                    model=plan.name,
                    precision=precision,
                    graph=stored[precision]["graph"],
                )
                logger.info(
                    "test %s/%s %s: %s",
                    plan.variant,
                    plan.name,
                    precision,
                    ", ".join(f"{t} {_primary(m):.4f}" for t, m in stored[precision]["metrics"].items()),
                )
            test.setdefault(plan.variant, {}).setdefault(plan.name, {})[precision] = stored[precision]
            bar.update(1)
    latency = measure_latency(exp, models, out) if jobs else {"method": {}, "ms": {}}
    events.add("latency", engines=len(latency["ms"]))
    return FinalEvaluation(test, latency)


def _primary(metrics: Mapping[str, float]) -> float:
    return float(metrics["f1"] if "f1" in metrics else metrics["accuracy"])


def latency_sentences(examples: Mapping[str, Sequence[Example]], n: int) -> list[str]:
    """``n`` real sentences taken in turn from each task's examples (token tasks: tokens joined)."""
    texts = {
        task: [
            ex.text if isinstance(ex, SentenceExample) else " ".join(ex.tokens)
            for ex in exs
            if isinstance(ex, SentenceExample | TokenExample)
        ]
        for task, exs in examples.items()
    }
    out: list[str] = []
    i = 0
    while len(out) < n and any(i < len(v) for v in texts.values()):
        for v in texts.values():
            if i < len(v) and len(out) < n:
                out.append(v[i])
        i += 1
    return out


def latency_texts(exp: ExperimentConfig, n: int) -> list[str]:
    """``n`` real validation sentences of the base config, taken in turn from each task."""
    import dataclasses

    from mtst.config import config_from_dict

    cfg = config_from_dict({**exp.base, "run_id": exp.name})
    cfg = dataclasses.replace(cfg, tasks=tuple(dataclasses.replace(t, test=None) for t in cfg.tasks))
    data = load_task_data(cfg)
    return latency_sentences({t: d.validation for t, d in data.items()}, n)


def measure_latency(
    exp: ExperimentConfig, models: Mapping[str, Sequence[ModelPlan]], out: Path
) -> dict[str, Any]:
    """Per (variant/model/precision): ms per sentence, batch 1, every engine in one interleaved loop."""
    from tqdm.auto import tqdm

    from mtst.runtime import Engine

    cfg = exp.latency
    texts = latency_texts(exp, cfg.sentences + cfg.warmup)
    warm, timed = texts[: cfg.warmup], texts[cfg.warmup :]
    engines: dict[str, Engine] = {}
    for plans in models.values():
        for plan in plans:
            for precision in exp.precisions_of(exp.variant(plan.variant)):
                engines[f"{plan.variant}/{plan.name}/{precision}"] = Engine.load(
                    model_dir(out, plan) / "bundle",
                    providers=["cpu"],
                    precision=precision,
                    layout="single",
                    intra_op_threads=cfg.threads,
                    inter_op_threads=1,
                    spinning=False,
                )
    for text in warm:
        for engine in engines.values():
            engine.predict([text])
    ms: dict[str, list[float]] = {k: [] for k in engines}
    for text in tqdm(timed, desc="latency", unit="sentence", disable=None, leave=False):
        for key, engine in engines.items():
            t0 = time.perf_counter()
            engine.predict([text])
            ms[key].append(round(1000 * (time.perf_counter() - t0), 4))
    logger.info(
        "latency (median ms, batch 1): %s",
        ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in ms.items() if v),
    )
    return {
        "method": {
            "sentences": len(timed),
            "warmup": len(warm),
            "batch": 1,
            "threads": cfg.threads,
            "provider": "cpu",
            "spinning": False,
            "call": "mtst.runtime.Engine.predict([text]) (tokenization, graph, decoding)",
            "source": "validation sentences of the base config, taken in turn from each task",
            "interleaved": True,
        },
        "ms": ms,
    }
