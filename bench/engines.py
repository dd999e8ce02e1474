"""mtst engines as benchmark systems: one :class:`~mtst.bench.systems.System` per bundle variant."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtst.errors import ConfigError, parse_enum
from mtst.runtime import Engine
from mtst.runtime.bundle import Bundle
from mtst.runtime.decode import word_starts
from mtst.runtime.engine import choose_variant
from mtst.runtime.manifest import MANIFEST_NAME, HeadKind, Layout, Manifest, Precision
from mtst.runtime.providers import Provider, precision_preference
from mtst.runtime.tokenize import TextTokenizer

from .systems import Batching, Family, HeadLabels, System

__all__ = ["MtstSystem", "bundle_facts", "engine_threads", "load_mtst_systems", "token_lengths"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MtstSystem:
    system: System
    engine: Engine
    bundle: Path
    tokenizer: TextTokenizer  # the bundle's, for word ids and token lengths
    # the same variant and threads, one batch per call and no token bound: plain padded batches
    padded_engine: Engine | None = None
    # the same variant and threads, one batch per call with the engine's own token bound: given batches
    given_engine: Engine | None = None

    @property
    def name(self) -> str:
        return self.system.name

    def run_padded(self, texts: Sequence[str]) -> None:
        """The corpus in plain consecutive batches of ``batch_size`` (each padded to its longest text).

        As many batches run at a time as the engine runs (its ``parallel_batches``), so the comparison
        with length-bucketed batches isolates the batching, not the threads.
        """
        size = self.engine.batch_size
        self._each(self.padded_engine, [list(texts[i : i + size]) for i in range(0, len(texts), size)])

    def run_given(self, batches: Sequence[Sequence[str]]) -> None:
        """Each of ``batches`` as one ``predict`` call (all heads), as many at a time as the engine runs
        batches (its ``parallel_batches``): the throughput scenario's same batches for every system.

        Each call answers its batch as any ``predict`` call does, in runs of at most the engine's
        ``max_batch_tokens`` padded tokens (on CPU 256: a run's activations stay in the core's L2 cache;
        on the 1,000-sentence corpus's sorted batches of 32, two at a time on 2 cores, int8-static-cpu
        answered 9% faster this way than with each batch in one run, every label the same). The
        scenario's batches are length-sorted, so the runs cut each batch in order: the runs are the
        engine's, the batches are the scenario's.
        """
        self._each(self.given_engine, batches)

    def run_given_whole(self, batches: Sequence[Sequence[str]]) -> None:
        """Each of ``batches`` as one graph run, no token bound (the plain padded engine), as many at a
        time as :meth:`run_given`: the same batches without the engine's runs of ``max_batch_tokens``."""
        self._each(self.padded_engine, batches)

    def _each(self, engine: Engine | None, batches: Sequence[Sequence[str]]) -> None:
        engine = engine or self.engine
        slices = [list(b) for b in batches]
        workers = self.engine.parallel_batches
        if workers == 1 or len(slices) == 1:
            for chunk in slices:
                engine.predict(chunk)
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(engine.predict, slices):
                pass


def engine_threads(provider: Provider, threads: int) -> dict[str, int]:
    """How an engine spends ``threads`` CPU threads: the engine options of the recommended setting.

    On CPU: one intra-op thread per session and ``threads`` batches at a time -- a one-text request
    runs on one core (no worker threads to wake between ops) and a corpus runs batches side by side.
    On GPUs the CPU threads only feed the device: ONNX Runtime's intra-op threads, one batch at a time.
    """
    if provider is Provider.CPU:
        return {"intra_op_threads": 1, "inter_op_threads": 1, "parallel_batches": threads}
    return {"intra_op_threads": threads, "inter_op_threads": 1, "parallel_batches": 1}


def bundle_facts(bundle: Path) -> dict[str, Any]:
    """What a report records about a bundle: manifest hash, variants, heads, provenance (no graph loaded)."""
    root = Path(bundle).resolve()
    m = Manifest.read(root)  # the engines verify the bundle when they load it
    manifest_sha = hashlib.sha256((root / MANIFEST_NAME).read_bytes()).hexdigest()
    return {
        "path": str(root),
        "manifest_sha256": manifest_sha,
        "encoder_sha256": m.encoder_sha256,
        "schema_version": m.schema_version,
        "mtst_version": m.mtst_version,
        "max_seq_len": m.max_seq_len,
        "pooling": m.pooling,
        "embedding_dim": m.embedding_dim,
        "inputs": list(m.inputs),
        "heads": [h.to_dict() | {"labels": len(h.labels)} for h in m.heads],
        "variants": [
            {
                "key": v.key,
                "precision": v.precision.value,
                "layout": v.layout.value,
                "graphs": {role: {"file": f, "bytes": m.files[f].bytes} for role, f in v.graphs.items()},
                "opset": v.opset,
            }
            for v in m.variants
        ],
        "provenance": m.provenance,
    }


def _head_labels(engine: Engine, tok: TextTokenizer, texts: Sequence[str]) -> HeadLabels:
    """Per head: the label of each sentence, or the tag of each word (first sub-token) for token heads."""
    texts = list(texts)
    preds = engine.predict(texts, return_logits=True)
    token_heads = [name for name, h in engine.heads.items() if h.kind is HeadKind.TOKEN]
    encs = tok.encode(texts)[0] if token_heads else []
    out: HeadLabels = {}
    for name, head in engine.heads.items():
        if head.kind is HeadKind.SENTENCE:
            out[name] = [p.heads[name].label for p in preds]  # type: ignore[union-attr]
        elif head.kind is HeadKind.TOKEN:
            rows = []
            for p, e in zip(preds, encs, strict=True):
                assert p.logits is not None
                best = p.logits[name].argmax(-1)
                rows.append(tuple(head.labels[int(best[j])] for j in word_starts(e.word_ids)))
            out[name] = rows
    return out


def token_lengths(tok: TextTokenizer, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(lengths after truncation, truncated flags), special tokens included."""
    encs, truncated = tok.encode(list(texts))
    return np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs)), truncated


def _variants_for(bundle: Path, provider: Provider, precisions: Sequence[str]) -> list[Precision | None]:
    """Precisions to run from this bundle: those asked for that it has, else the provider's best fit."""
    b = Bundle(root=Path(bundle).resolve(), manifest=Manifest.read(bundle), verified=False)
    have = {v.precision for v in b.manifest.variants if v.layout is not Layout.HEADS}
    if not precisions:
        return [choose_variant(b, provider).precision]
    chosen: list[Precision | None] = []
    for p in precisions:
        if p == "all":
            # the provider's preferred variant first: it is the reference of the report's ratios
            return sorted(have, key=precision_preference(provider).index)
        prec = parse_enum(Precision, p, "--precision", hint=" (or 'all')")
        if prec in have:
            chosen.append(prec)
    return chosen


def _as_system(name: str, engine: Engine, tok: TextTokenizer, *, threads: int, spinning: bool) -> System:
    intra = engine.settings.intra_op_threads

    def run_one(text: str) -> Any:
        return engine.predict([text])

    def run_corpus(texts: Sequence[str]) -> Any:
        return engine.predict(texts)

    def embed(texts: Sequence[str]) -> np.ndarray:
        return engine.embed(list(texts))

    def labels(texts: Sequence[str]) -> HeadLabels:
        return _head_labels(engine, tok, texts)

    return System(
        name=name,
        family=Family.MTST,
        precision=engine.variant.precision.value,
        run_one=run_one,
        run_corpus=run_corpus,
        embed=embed,
        corpus_batching=Batching.LENGTH_SORTED,
        labels=labels,
        facts={
            "how": "Engine.load(bundle).predict(texts): tokenize, length-bucketed batches, all heads decoded"
            + f" (intra-op threads {intra}, up to {engine.parallel_batches} batches at a time)",
            "bundle": str(engine.bundle.root),
            "variant": engine.variant.key,
            "active_providers": [p.value for p in engine.active_providers],
            "threads": threads,
            "spinning": spinning,
            "intra_op_threads": intra,
            "parallel_batches": engine.parallel_batches,
            "batch_size": engine.batch_size,
            "max_batch_tokens": engine.max_batch_tokens,
        },
    )


def load_mtst_systems(
    bundles: Sequence[Path],
    *,
    provider: Provider,
    precisions: Sequence[str],
    threads: int,
    spinning: bool,
    batch_size: int,
) -> list[MtstSystem]:
    """One engine per (bundle, precision); names say the precision (and the bundle when several)."""
    out: list[MtstSystem] = []
    for bundle in bundles:
        wanted = _variants_for(bundle, provider, precisions)
        if not wanted:
            raise ConfigError(
                f"--precision {','.join(precisions)}: bundle {bundle} has none of these variants"
            )
        for prec in wanted:
            options: dict[str, Any] = {
                "providers": [provider.value],
                "precision": prec,
                "spinning": spinning,
                "batch_size": batch_size,
                **engine_threads(provider, threads),
            }
            t0 = time.perf_counter()
            engine = Engine.load(bundle, **options)
            load_s = time.perf_counter() - t0  # verify + sessions (with TensorRT: the engine build)
            m = engine.bundle.manifest
            tok = TextTokenizer.from_file(
                engine.bundle.tokenizer_path,
                max_seq_len=m.max_seq_len,
                pad_token_id=m.pad_token_id,
                input_names=m.inputs,
            )
            name = f"mtst {engine.variant.precision.value}"
            if any(s.name == name for s in out):  # same precision from another bundle
                name += f" ({Path(bundle).name})"
            system = _as_system(name, engine, tok, threads=threads, spinning=spinning)
            system.facts["load_s"] = load_s
            # plain padded batches, one at a time
            padded = Engine.load(bundle, **(options | {"max_batch_tokens": None, "parallel_batches": 1}))
            # given batches, one at a time (on GPUs the engine already runs one batch at a time)
            one = engine.parallel_batches == 1
            given = engine if one else Engine.load(bundle, **(options | {"parallel_batches": 1}))
            out.append(
                MtstSystem(
                    system=system,
                    engine=engine,
                    bundle=Path(bundle),
                    tokenizer=tok,
                    padded_engine=padded,
                    given_engine=given,
                )
            )
    return out
