"""One benchmark run: load the mtst engines and the peers, measure every scenario asked, judge the targets.

::

    report = run_benchmark(BenchConfig(bundles=(Path("bundle/"),), data=Path("corpus.txt"), compare=("all",)))
    write_report(report, Path("bench-out/"))

Speed figures are only meaningful as ratios between systems measured in the same process, on the
same sentences, interleaved; every system runs with the same number of threads, and every ONNX
Runtime session (mtst's and the peers') with the same spinning setting.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtst.errors import ConfigError, MtstError
from mtst.runtime.providers import Provider

from .breakdown import RequestProfile, profile_request
from .coldstart import ColdStart, ColdStartSpec, cpp_spec, find_cpp_app, mtst_spec, run_cold_starts
from .config import BenchConfig, Scenario
from .data import length_stats, load_bundle_sentences, load_sentences
from .engines import MtstSystem, bundle_facts, engine_threads, load_mtst_systems, token_lengths
from .fidelity import Fidelity, Reference, measure_fidelity
from .frozen import FrozenBackbone, run_frozen_backbone
from .judge import judge
from .peers import Peer, PeerOptions, build_peers, cold_start_specs, missing_modules, parse_compare
from .realtime import OpenLoop, Realtime, closed_loop, open_loop
from .reference import TorchReference
from .results import BenchReport, DataFacts, ReferenceInfo, Scenarios, Skipped, SystemResult
from .system import collect_system_info, load_average
from .systems import System
from .throughput import PADDED_SUFFIX, Throughput, measure_throughput

__all__ = ["run_benchmark"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True, slots=True)
class _Progress:
    enabled: bool

    @contextlib.contextmanager
    def stage(self, desc: str, total: int) -> Iterator[Callable[[], None]]:
        logger.info("%s (%d steps)", desc, total)
        if not self.enabled:
            yield lambda: None
            return
        from tqdm import tqdm

        with tqdm(total=total, desc=desc, leave=False, file=sys.stderr) as bar:
            yield lambda: bar.update(1)


@dataclass(frozen=True, slots=True)
class _Inputs:
    """The sentences of the run: the realtime sample (the first N) and the throughput corpus."""

    sample: list[str]  # realtime, fidelity, frozen backbone, cold start (its first sentence)
    corpus: list[str]
    corpus_lengths: np.ndarray  # token lengths of the corpus sentences
    facts: DataFacts


def _inputs(config: BenchConfig, first: MtstSystem) -> _Inputs:
    if config.data is not None:
        dataset = load_sentences(config.data)
    else:
        dataset = load_bundle_sentences(first.engine.bundle.root, first.engine.bundle.manifest.parity)
    lengths, truncated = token_lengths(first.tokenizer, dataset.sentences)
    sample = list(dataset.head(config.realtime_sentences))
    corpus = list(dataset.head(config.corpus_sentences))
    facts = DataFacts(
        source=dataset.source,
        n_sentences=len(dataset.sentences),
        tokens=length_stats(lengths, truncated),
        sample_n=len(sample),
        sample_tokens=length_stats(lengths[: len(sample)], truncated[: len(sample)]),
        corpus_n=len(corpus),
    )
    return _Inputs(sample, corpus, lengths[: len(corpus)], facts)


def _checkpoint_for(config: BenchConfig, facts: Mapping[str, Any]) -> tuple[Path | None, str]:
    """The torch fp32 reference checkpoint: --checkpoint, else the bundle's provenance path if it exists."""
    if config.checkpoint is not None:
        if not (config.checkpoint / "mtst.json").is_file():
            raise ConfigError(
                f"--checkpoint {config.checkpoint}: not an mtst checkpoint (mtst.json is missing)"
            )
        return config.checkpoint, "--checkpoint"
    prov = facts.get("provenance") or {}
    for key in ("checkpoint", "source_checkpoint", "checkpoint_path"):
        value = prov.get(key)
        if isinstance(value, dict):
            value = value.get("path")
        if isinstance(value, str) and (Path(value) / "mtst.json").is_file():
            return Path(value), f"bundle provenance ({key})"
    return None, "no --checkpoint given and the bundle's provenance names no checkpoint that still exists"


@dataclass(frozen=True, slots=True)
class _Reference:
    """The torch fp32 reference model, or why there is none."""

    checkpoint: Path | None
    how: str  # how the checkpoint was found, or why none was
    model: TorchReference | None = None
    problem: str | None = None  # why the model could not be built from the checkpoint

    @property
    def missing(self) -> str:
        return self.problem or self.how

    def info(self) -> ReferenceInfo:
        found = self.checkpoint is not None
        return ReferenceInfo(str(self.checkpoint) if found else None, self.how if found else None)


def _reference(checkpoint: Path | None, how: str, threads: int) -> _Reference:
    if checkpoint is None:
        return _Reference(checkpoint, how)
    missing = missing_modules(Peer.TORCH)
    if missing:
        problem = f"torch fp32 reference not available: {', '.join(missing)} not installed (pip install 'mtst[compare]')"
        return _Reference(checkpoint, how, problem=problem)
    # torch's OpenMP workers spin after each op by default; interleaved with ONNX Runtime on the same
    # cores that would slow the next system down. Passive waiting, like ORT with spinning off.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return _Reference(checkpoint, how, model=TorchReference(checkpoint, threads=threads))


def _runnable_peers(
    config: BenchConfig, wanted: Sequence[Peer], ref: _Reference
) -> tuple[Sequence[Peer], list[Skipped]]:
    """The peers asked for that can run here; the others, each with the reason."""
    if wanted and config.provider is not Provider.CPU:
        why = f"peers run on CPU only; --provider is {config.provider.value}"
    elif wanted and ref.model is None:
        why = f"peers need the checkpoint's torch model: {ref.missing}"
    else:
        return wanted, []
    return (), [Skipped(p.value, why) for p in wanted]


# ---------------------------------------------------------------------------------------------- the run
def run_benchmark(config: BenchConfig) -> BenchReport:
    t_start = time.time()
    progress = _Progress(config.progress and sys.stderr.isatty())
    machine = collect_system_info()
    bundles = tuple(bundle_facts(b) for b in config.bundles)
    mtst = load_mtst_systems(
        config.bundles,
        provider=config.provider,
        precisions=config.precisions,
        threads=config.threads,
        spinning=config.spinning,
        batch_size=config.batch_size,
    )
    inputs = _inputs(config, mtst[0])
    checkpoint, how = _checkpoint_for(config, bundles[0])
    wanted = parse_compare(list(config.compare))
    ref = _reference(checkpoint, how, config.threads)
    peers, skipped = _runnable_peers(config, wanted, ref)
    notes = [] if ref.model is not None else [f"fidelity vs torch fp32 not measured: {ref.missing}"]
    options = PeerOptions(threads=config.threads, spinning=config.spinning, batch_size=config.batch_size)

    with contextlib.ExitStack() as stack:
        peer_systems: list[System] = []
        cold_peers: list[ColdStartSpec] = []
        if peers and ref.model is not None:
            logger.info(
                "preparing peers %s (exports happen now, before any timing)", [p.value for p in peers]
            )
            peer_systems, peer_skipped, setup = stack.enter_context(
                build_peers(
                    ref.model,
                    peers,
                    threads=config.threads,
                    spinning=config.spinning,
                    batch_size=config.batch_size,
                )
            )
            skipped += [Skipped(name, reason) for name, reason in peer_skipped.items()]
            cold_peers = cold_start_specs(setup, peer_systems, inputs.sample[0], options)
        systems = [m.system for m in mtst] + peer_systems
        fidelity = _fidelity(systems, inputs.sample, ref.model, progress)
        scenarios = _scenarios(config, mtst, systems, inputs, cold_peers, progress)

    return BenchReport(
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        command=config.command or "run_benchmark(...)",
        duration_s=time.time() - t_start,
        machine=machine,
        load_average_end=tuple(load_average() or ()),
        settings=config.to_dict() | {"omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        bundles=bundles,
        data=inputs.facts,
        reference=ref.info(),
        systems=tuple(SystemResult.of(s, fidelity.get(s.name)) for s in systems),
        skipped=tuple(skipped),
        scenarios=scenarios,
        targets=tuple(judge([m.name for m in mtst], [s.name for s in peer_systems], scenarios, fidelity)),
        notes=tuple(notes),
    )


def _fidelity(
    systems: Sequence[System], sample: Sequence[str], ref: TorchReference | None, progress: _Progress
) -> dict[str, Fidelity]:
    if ref is None:
        return {}
    reference = Reference("torch fp32", ref.embed(sample), ref.labels(sample))
    out: dict[str, Fidelity] = {}
    with progress.stage("fidelity", len(systems)) as tick:
        for s in systems:
            out[s.name] = measure_fidelity(s, sample, reference)
            tick()
    return out


# ---------------------------------------------------------------------------------------------- scenarios
def _scenarios(
    config: BenchConfig,
    mtst: Sequence[MtstSystem],
    systems: Sequence[System],
    inputs: _Inputs,
    cold_peers: Sequence[ColdStartSpec],
    progress: _Progress,
) -> Scenarios:
    """Every scenario asked for, in a fixed order; the first mtst system is the reference of the ratios."""
    asked = set(config.scenarios)
    realtime = throughput = frozen = cold = profile = None
    if Scenario.REALTIME in asked:
        realtime = _realtime(config, mtst, systems, inputs.sample, progress)
    if Scenario.THROUGHPUT in asked:
        throughput = _throughput(config, mtst, systems, inputs, progress)
    if Scenario.FROZEN_BACKBONE in asked:
        frozen = _frozen_backbone(config, mtst, inputs.sample)
    if Scenario.COLD_START in asked:
        cold = _cold_start(config, mtst, cold_peers, inputs.sample[0], progress)
    if config.profile and Scenario.REALTIME in asked:
        profile = _profile(config, mtst, inputs.sample)
    return Scenarios(realtime, throughput, frozen, cold, profile)


def _realtime(
    config: BenchConfig,
    mtst: Sequence[MtstSystem],
    systems: Sequence[System],
    sample: Sequence[str],
    progress: _Progress,
) -> Realtime:
    with progress.stage("realtime closed loop", len(sample) * config.rounds) as tick:
        cl = closed_loop(systems, sample, rounds=config.rounds, warmup=config.warmup, on_item=tick)
    opened: dict[str, OpenLoop] = {}
    for m in mtst if config.open_loop else ():
        logger.info("open loop: %s", m.name)
        opened[m.name] = open_loop(
            m.system,
            sample,
            closed=cl.latency[m.name],
            rate=config.open_loop_rate,
            p99_target_ms=config.p99_target_ms,
            seconds_per_trial=config.open_loop_seconds,
            max_trials=config.open_loop_trials,
        )
    return Realtime(reference=mtst[0].name, closed_loop=cl, open_loop=opened)


def _throughput(
    config: BenchConfig,
    mtst: Sequence[MtstSystem],
    systems: Sequence[System],
    inputs: _Inputs,
    progress: _Progress,
) -> Throughput:
    with progress.stage(f"throughput, {len(inputs.corpus)} sentences", 2 * config.corpus_rounds) as tick:
        return measure_throughput(
            systems,
            inputs.corpus,
            inputs.corpus_lengths,
            batch_size=config.batch_size,
            rounds=config.corpus_rounds,
            reference=mtst[0].name,
            max_tokens={m.name: m.engine.max_batch_tokens for m in mtst},
            padded_runs={m.name: m.run_padded for m in mtst},
            given_runs={m.name: m.run_given for m in mtst}
            | {m.name + PADDED_SUFFIX: m.run_given_whole for m in mtst if m.padded_engine is not None},
            on_round=tick,
        )


def _frozen_backbone(
    config: BenchConfig, mtst: Sequence[MtstSystem], sample: Sequence[str]
) -> dict[str, FrozenBackbone]:
    out = {}
    for m in mtst:
        logger.info("frozen backbone: %s", m.name)
        out[m.name] = run_frozen_backbone(
            m.name,
            m.engine,
            sample,
            rounds=config.rounds,
            warmup=config.warmup,
            swap_to=config.swap_heads,
            swaps=config.swaps,
        )
    return out


def _cold_start(
    config: BenchConfig,
    mtst: Sequence[MtstSystem],
    peers: Sequence[ColdStartSpec],
    sentence: str,
    progress: _Progress,
) -> dict[str, ColdStart]:
    specs = [
        mtst_spec(
            m.name,
            m.engine.bundle.root,
            sentence,
            precision=m.engine.variant.precision.value,
            provider=config.provider.value,
            threads=engine_threads(config.provider, config.threads),
            spinning=config.spinning,
        )
        for m in mtst
    ]
    if config.cpp_build is not None:
        app = find_cpp_app(config.cpp_build)
        specs += [
            cpp_spec(
                f"{m.name} (C++ runtime)",
                app,
                m.engine.bundle.root,
                sentence,
                precision=m.engine.variant.precision.value,
            )
            for m in mtst
        ]
    specs += peers
    try:
        with progress.stage("cold start", len(specs) * (config.cold_start_runs + 1)) as tick:
            return run_cold_starts(specs, runs=config.cold_start_runs, on_run=tick)
    except MtstError as exc:
        raise MtstError(f"cold-start scenario: {exc}") from None


def _profile(
    config: BenchConfig, mtst: Sequence[MtstSystem], sample: Sequence[str]
) -> dict[str, RequestProfile]:
    """Where the time of a batch-1 request goes."""
    head = sample[: min(len(sample), 128)]
    return {m.name: profile_request(m, head, rounds=1, warmup=config.warmup) for m in mtst}
