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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from mtst.errors import ConfigError, MtstError
from mtst.runtime.providers import Provider

from . import targets as tg
from .coldstart import ColdStartSpec, mtst_spec, peer_spec, run_cold_starts
from .data import Dataset, length_stats, load_bundle_sentences, load_sentences
from .engines import MtstSystem, bundle_facts, engine_threads, load_mtst_systems, token_lengths
from .fidelity import Fidelity, Reference, measure_fidelity
from .system import collect_system_info, load_average
from .systems import System

__all__ = ["BenchConfig", "Scenario", "run_benchmark"]

logger = logging.getLogger(__name__)


class Scenario(str, Enum):
    REALTIME = "realtime"
    THROUGHPUT = "throughput"
    FROZEN_BACKBONE = "frozen-backbone"
    COLD_START = "cold-start"


def parse_scenarios(values: str | Sequence[str]) -> tuple[Scenario, ...]:
    items = values.split(",") if isinstance(values, str) else [v for x in values for v in x.split(",")]
    chosen: set[Scenario] = set()
    for raw in items:
        name = raw.strip().lower()
        if name == "all":
            chosen.update(Scenario)
            continue
        try:
            chosen.add(Scenario(name))
        except ValueError:
            raise ConfigError(
                f"--scenario: {raw.strip()!r} is not one of {[s.value for s in Scenario] + ['all']}"
            ) from None
    if not chosen:
        raise ConfigError("--scenario: name at least one scenario (or 'all')")
    return tuple(s for s in Scenario if s in chosen)


@dataclass(frozen=True)
class BenchConfig:
    """Everything a run needs; the defaults are those of the documented benchmark."""

    bundles: tuple[Path, ...]
    provider: Provider = Provider.CPU
    precisions: tuple[str, ...] = ()  # empty: the variant each bundle would pick for the provider
    scenarios: tuple[Scenario, ...] = tuple(Scenario)
    data: Path | None = None  # None: the sentences kept in the bundle's parity.json
    compare: tuple[str, ...] = ()  # peers (see mtst.bench.peers.parse_compare)
    checkpoint: Path | None = None  # torch fp32 reference; None: the bundle's provenance path if it exists
    threads: int = 2
    spinning: bool = False
    batch_size: int = 32
    realtime_sentences: int = 256  # the first N sentences: closed/open loop, fidelity, frozen backbone
    rounds: int = 2
    warmup: int = 10
    corpus_sentences: int = 0  # 0: the whole data set
    corpus_rounds: int = 3
    open_loop: bool = True
    open_loop_rate: float | None = None  # None: half the closed-loop capacity
    p99_target_ms: float = 10.0
    open_loop_seconds: float = 2.0
    open_loop_trials: int = 8
    swap_heads: Path | None = None
    swaps: int = 20
    cold_start_runs: int = 3
    profile: bool = True
    progress: bool = True
    command: str = ""

    def __post_init__(self) -> None:
        if not self.bundles:
            raise ConfigError("bundles: give at least one bundle folder")
        object.__setattr__(self, "bundles", tuple(Path(b) for b in self.bundles))
        try:
            object.__setattr__(self, "provider", Provider(self.provider))
        except ValueError:
            raise ConfigError(
                f"--provider: {self.provider!r} is not one of {[p.value for p in Provider]}"
            ) from None
        for name in (
            "threads",
            "batch_size",
            "rounds",
            "corpus_rounds",
            "cold_start_runs",
            "open_loop_trials",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name.replace('_', '-')}: expected an integer >= 1, got {value!r}")
        for name in ("realtime_sentences", "corpus_sentences", "warmup", "swaps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name.replace('_', '-')}: expected an integer >= 0, got {value!r}")
        for name in ("p99_target_ms", "open_loop_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    f"{name.replace('_', '-')}: expected a number > 0, got {getattr(self, name)!r}"
                )
        if self.open_loop_rate is not None and not self.open_loop_rate > 0:
            raise ConfigError(
                f"rate: expected a number > 0 (requests per second), got {self.open_loop_rate!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bundles"] = [str(b) for b in self.bundles]
        d["provider"] = self.provider.value
        d["scenarios"] = [s.value for s in self.scenarios]
        for k in ("data", "checkpoint", "swap_heads"):
            d[k] = None if d[k] is None else str(d[k])
        d.pop("command")
        d.pop("progress")
        return d


# ---------------------------------------------------------------------------------------------- helpers
@dataclass
class _Progress:
    enabled: bool
    bar: Any = field(default=None)

    @contextlib.contextmanager
    def stage(self, desc: str, total: int) -> Iterator[Callable[[], None]]:
        logger.info("%s (%d steps)", desc, total)
        if not self.enabled:
            yield lambda: None
            return
        from tqdm import tqdm

        with tqdm(total=total, desc=desc, leave=False, file=sys.stderr) as bar:
            yield lambda: bar.update(1)


def _checkpoint_for(config: BenchConfig, facts: dict[str, Any]) -> tuple[Path | None, str]:
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


def _dataset(config: BenchConfig, first: MtstSystem) -> Dataset:
    if config.data is not None:
        return load_sentences(config.data)
    return load_bundle_sentences(first.engine.bundle.root, first.engine.bundle.manifest.parity)


def _torch_reference(checkpoint: Path | None, threads: int) -> tuple[Any, str | None]:
    if checkpoint is None:
        return None, None
    from .peers import Peer, TorchReference, missing_modules

    missing = missing_modules(Peer.TORCH)
    if missing:
        return (
            None,
            f"torch fp32 reference not available: {', '.join(missing)} not installed (pip install 'mtst[compare]')",
        )
    # torch's OpenMP workers spin after each op by default; interleaved with ONNX Runtime on the same
    # cores that would slow the next system down. Passive waiting, like ORT with spinning off.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return TorchReference(checkpoint, threads=threads), None


# ---------------------------------------------------------------------------------------------- the run
def run_benchmark(config: BenchConfig) -> dict[str, Any]:
    t_start = time.time()
    progress = _Progress(config.progress and sys.stderr.isatty())
    machine = collect_system_info()
    notes: list[str] = []
    skipped: list[dict[str, str]] = []
    bundles = [bundle_facts(b) for b in config.bundles]
    mtst = load_mtst_systems(
        config.bundles,
        provider=config.provider,
        precisions=config.precisions,
        threads=config.threads,
        spinning=config.spinning,
        batch_size=config.batch_size,
    )
    first = mtst[0]
    dataset = _dataset(config, first)
    lengths, truncated = token_lengths(first.tokenizer, dataset.sentences)
    sample = list(dataset.head(config.realtime_sentences))
    corpus = list(dataset.head(config.corpus_sentences))
    corpus_lengths = lengths[: len(corpus)]
    sample_lengths = lengths[: len(sample)]
    data_facts = {
        "source": dataset.source,
        "n_sentences": len(dataset.sentences),
        "tokens": length_stats(lengths, truncated).to_dict(),
        "realtime_sample": {
            "n": len(sample),
            "tokens": length_stats(sample_lengths, truncated[: len(sample)]).to_dict(),
        },
        "corpus": {"n": len(corpus)},
    }

    checkpoint, why = _checkpoint_for(config, bundles[0])
    from .peers import parse_compare

    peers_wanted = parse_compare(list(config.compare))
    if config.provider is not Provider.CPU and peers_wanted:
        for p in peers_wanted:
            skipped.append(
                {"name": p.value, "reason": f"peers run on CPU only; --provider is {config.provider.value}"}
            )
        peers_wanted = ()
    reference, ref_problem = _torch_reference(checkpoint, config.threads)
    if reference is None:
        notes.append(f"fidelity vs torch fp32 not measured: {ref_problem or why}")
        for p in peers_wanted:
            skipped.append(
                {"name": p.value, "reason": f"peers need the checkpoint's torch model: {ref_problem or why}"}
            )
        peers_wanted = ()

    with contextlib.ExitStack() as stack:
        peer_systems: list[System] = []
        setup = None
        if peers_wanted:
            from .peers import build_peers

            logger.info(
                "preparing peers %s (exports happen now, before any timing)", [p.value for p in peers_wanted]
            )
            peer_systems, peer_skipped, setup = stack.enter_context(
                build_peers(
                    reference,
                    peers_wanted,
                    threads=config.threads,
                    spinning=config.spinning,
                    batch_size=config.batch_size,
                )
            )
            skipped += [{"name": k, "reason": v} for k, v in peer_skipped.items()]
        systems: list[System] = [m.system for m in mtst] + peer_systems

        # ---------------------------------------------------------------- fidelity
        fidelity: dict[str, Fidelity] = {}
        if reference is not None:
            ref = Reference("torch fp32", reference.embed(sample), reference.labels(sample))
            with progress.stage("fidelity", len(systems)) as tick:
                for s in systems:
                    fidelity[s.name] = measure_fidelity(s, sample, ref)
                    tick()

        scenarios: dict[str, Any] = {}
        ref_name = first.name
        # ---------------------------------------------------------------- realtime
        if Scenario.REALTIME in config.scenarios:
            from .realtime import closed_loop, open_loop

            with progress.stage("realtime closed loop", len(sample) * config.rounds) as tick:
                cl = closed_loop(systems, sample, rounds=config.rounds, warmup=config.warmup, on_item=tick)
            rt = cl.to_dict()
            ref_p50 = cl.latency[ref_name].p50_ms
            for name, row in rt["systems"].items():
                row["ratio_to_reference"] = cl.latency[name].p50_ms / ref_p50
            scenarios["realtime"] = {"reference": ref_name, "closed_loop": rt, "open_loop": {}}
            if config.open_loop:
                for m in mtst:
                    logger.info("open loop: %s", m.name)
                    scenarios["realtime"]["open_loop"][m.name] = open_loop(
                        m.system,
                        sample,
                        closed=cl.latency[m.name],
                        rate=config.open_loop_rate,
                        p99_target_ms=config.p99_target_ms,
                        seconds_per_trial=config.open_loop_seconds,
                        max_trials=config.open_loop_trials,
                    ).to_dict()
        # ---------------------------------------------------------------- throughput
        if Scenario.THROUGHPUT in config.scenarios:
            from .throughput import measure_throughput

            with progress.stage(f"throughput, {len(corpus)} sentences", config.corpus_rounds) as tick:
                tp = measure_throughput(
                    systems,
                    corpus,
                    corpus_lengths,
                    batch_size=config.batch_size,
                    rounds=config.corpus_rounds,
                    max_tokens={m.name: m.engine.max_batch_tokens for m in mtst},
                    padded_runs={m.name: m.run_padded for m in mtst},
                    on_round=tick,
                )
            td = tp.to_dict()
            ref_rate = tp.rows[ref_name].sentences_per_s
            for name, row in td["systems"].items():
                row["ratio_to_reference"] = tp.rows[name].sentences_per_s / ref_rate
            td["reference"] = ref_name
            scenarios["throughput"] = td
        # ---------------------------------------------------------------- frozen backbone
        if Scenario.FROZEN_BACKBONE in config.scenarios:
            from .frozen import run_frozen_backbone

            fb: dict[str, Any] = {}
            for m in mtst:
                logger.info("frozen backbone: %s", m.name)
                fb[m.name] = run_frozen_backbone(
                    m.name,
                    m.engine,
                    sample,
                    rounds=config.rounds,
                    warmup=config.warmup,
                    swap_to=config.swap_heads,
                    swaps=config.swaps,
                )
            scenarios["frozen_backbone"] = {k: v.to_dict() for k, v in fb.items()}
        # ---------------------------------------------------------------- cold start
        if Scenario.COLD_START in config.scenarios:
            specs: list[ColdStartSpec] = [
                mtst_spec(
                    m.name,
                    m.engine.bundle.root,
                    sample[0],
                    precision=m.engine.variant.precision.value,
                    provider=config.provider.value,
                    threads=engine_threads(config.provider, config.threads),
                    spinning=config.spinning,
                )
                for m in mtst
            ]
            if setup is not None:
                specs += _peer_cold_specs(peer_systems, setup, sample[0], config)
            try:
                with progress.stage("cold start", len(specs) * (config.cold_start_runs + 1)) as tick:
                    cs = run_cold_starts(specs, runs=config.cold_start_runs, on_run=tick)
            except MtstError as exc:
                raise MtstError(f"cold-start scenario: {exc}") from None
            scenarios["cold_start"] = {k: v.to_dict() for k, v in cs.items()}
        # ---------------------------------------------------------------- where the time goes
        if config.profile and Scenario.REALTIME in config.scenarios:
            from .breakdown import profile_request

            scenarios["profile"] = {
                m.name: profile_request(m, sample[: min(len(sample), 128)], rounds=1, warmup=config.warmup)
                for m in mtst
            }

    target_rows = _judge(mtst, systems, scenarios, fidelity)
    report: dict[str, Any] = {
        "format": "mtst-bench-report",
        "format_version": 1,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": config.command or "run_benchmark(...)",
        "duration_s": time.time() - t_start,
        "machine": machine.to_dict(),
        "load_average_end": list(load_average() or ()),
        "settings": config.to_dict() | {"omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "bundles": bundles,
        "data": data_facts,
        "reference": {
            "checkpoint": None if checkpoint is None else str(checkpoint),
            "how": why if checkpoint else None,
        },
        "systems": [
            s.describe() | {"fidelity": fidelity[s.name].to_dict() if s.name in fidelity else None}
            for s in systems
        ],
        "skipped": skipped,
        "scenarios": scenarios,
        "targets": [t.to_dict() for t in target_rows],
        "notes": notes,
    }
    return report


def _peer_cold_specs(
    peer_systems: Sequence[System], setup: Any, sentence: str, config: BenchConfig
) -> list[ColdStartSpec]:
    from .peers import PEER_NAMES, Peer

    by_name = {PEER_NAMES[p]: p for p in Peer}
    out: list[ColdStartSpec] = []
    for s in peer_systems:
        peer = by_name[s.name]
        if peer is Peer.TORCH:
            out.append(
                peer_spec(
                    s.name,
                    "torch",
                    sentence,
                    threads=config.threads,
                    spinning=config.spinning,
                    checkpoint=str(setup.checkpoint),
                )
            )
        elif peer in setup.optimum:
            directory, file_name = setup.optimum[peer]
            out.append(
                peer_spec(
                    s.name,
                    "optimum",
                    sentence,
                    threads=config.threads,
                    spinning=config.spinning,
                    dir=str(directory),
                    file=file_name,
                )
            )
        elif setup.st_dir is not None:
            out.append(
                peer_spec(
                    s.name,
                    peer.value,
                    sentence,
                    threads=config.threads,
                    spinning=config.spinning,
                    dir=str(setup.st_dir),
                )
            )
    return out


def _judge(
    mtst: Sequence[MtstSystem],
    systems: Sequence[System],
    scenarios: dict[str, Any],
    fidelity: dict[str, Fidelity],
) -> list[tg.TargetResult]:
    rows: list[tg.TargetResult] = []
    peers = [s.name for s in systems if not s.is_mtst]
    for m in mtst:
        name = m.name
        # realtime p50 vs the fastest peer
        rt = scenarios.get("realtime")
        if rt is None:
            rows.append(
                tg.check("realtime_p50_vs_fastest_peer", name, None, note="realtime scenario not run")
            )
        elif not peers:
            rows.append(tg.check("realtime_p50_vs_fastest_peer", name, None, note="no peers (--compare)"))
        else:
            lat = rt["closed_loop"]["systems"]
            fastest = min(peers, key=lambda p: lat[p]["latency"]["p50_ms"])
            mine, theirs = lat[name]["latency"]["p50_ms"], lat[fastest]["latency"]["p50_ms"]
            rows.append(
                tg.check(
                    "realtime_p50_vs_fastest_peer",
                    name,
                    mine / theirs,
                    against=f"fastest peer {fastest}: p50 {theirs:.3f} ms (mtst {mine:.3f} ms)",
                )
            )
        tp = scenarios.get("throughput")
        if tp is None:
            rows.append(
                tg.check("throughput_vs_fastest_peer", name, None, note="throughput scenario not run")
            )
        elif not peers:
            rows.append(tg.check("throughput_vs_fastest_peer", name, None, note="no peers (--compare)"))
        else:
            rate = tp["systems"]
            fastest = max(peers, key=lambda p: rate[p]["sentences_per_s"])
            mine, theirs = rate[name]["sentences_per_s"], rate[fastest]["sentences_per_s"]
            rows.append(
                tg.check(
                    "throughput_vs_fastest_peer",
                    name,
                    mine / theirs,
                    against=f"fastest peer {fastest}: {theirs:.1f} sentences/s (mtst {mine:.1f})",
                )
            )
        fid = fidelity.get(name)
        if fid is None:
            rows.append(tg.check("cos_min", name, None, note="no torch fp32 reference"))
            rows.append(tg.check("label_agreement_min", name, None, note="no torch fp32 reference"))
        else:
            rows.append(tg.check("cos_min", name, fid.cos_min, against=f"torch fp32, {fid.n} sentences"))
            worst = (
                min(fid.label_agreement, key=fid.label_agreement.__getitem__) if fid.label_agreement else None
            )
            rows.append(
                tg.check(
                    "label_agreement_min",
                    name,
                    fid.min_label_agreement,
                    against=f"worst head: {worst}" if worst else "",
                    note="" if worst else "the bundle has no label heads",
                )
            )
        fb = (scenarios.get("frozen_backbone") or {}).get(name)
        if fb is None:
            rows.append(tg.check("heads_only_p99_us", name, None, note="frozen-backbone scenario not run"))
        elif fb.get("heads_only") is None:
            rows.append(
                tg.check("heads_only_p99_us", name, None, note="; ".join(fb.get("notes", [])) or "not run")
            )
        else:
            rows.append(tg.check("heads_only_p99_us", name, float(fb["heads_only"]["latency"]["p99_us"])))
        cs = (scenarios.get("cold_start") or {}).get(name)
        if cs is None:
            rows.append(tg.check("cold_start_s", name, None, note="cold-start scenario not run"))
            rows.append(tg.check("cold_start_peak_rss_mb", name, None, note="cold-start scenario not run"))
        else:
            rows.append(
                tg.check("cold_start_s", name, cs["total_s"], against="spawn -> first answer, median")
            )
            rows.append(tg.check("cold_start_peak_rss_mb", name, cs["peak_rss_mb"]))
    return rows
