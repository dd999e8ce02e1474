"""The engine: a verified bundle, ONNX Runtime sessions on the chosen providers, and typed answers.

::

    engine = Engine.load("bundle/", providers=["cuda", "cpu"])   # or "auto"
    engine.predict(["Apple opened an office in Paris."])[0].heads["ner"].entities
    emb = engine.embed(texts)                                    # (N, dim) float32, L2-normalized
    engine.predict_from_embeddings(emb)                          # split bundles: heads.onnx alone
    engine.swap_heads("new-heads/")                              # same encoder only (hash-checked)

One engine serves many threads: ONNX Runtime sessions and the tokenizer are safe for concurrent
use, the embedding cache holds a lock, and the swappable heads live in one immutable object that each
call reads once, so a call that started before ``swap_heads`` finishes on the old heads.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from mtst.errors import BundleError, ConfigError
from mtst.runtime.batching import plan_batches
from mtst.runtime.bundle import Bundle, load_bundle
from mtst.runtime.cache import EmbeddingCache
from mtst.runtime.manifest import MANIFEST_NAME, HeadInfo, HeadKind, Layout, Manifest, Precision, Variant
from mtst.runtime.providers import (
    GraphOptimization,
    Provider,
    ProviderPlan,
    SessionSettings,
    create_session,
    precision_preference,
    resolve_providers,
)
from mtst.runtime.results import (
    HeadDecoding,
    Prediction,
    SentenceLabel,
    decode_sentence,
    decode_tokens,
    head_decodings,
)
from mtst.runtime.tokenize import TextTokenizer, check_texts

__all__ = ["AUTO_BATCH_TOKENS", "Engine", "choose_variant"]

logger = logging.getLogger(__name__)

_CHUNK = 4096  # texts tokenized at once: bounds memory for huge lists; results stream out in order
_HEADS_ROWS = 4096  # embeddings per heads.onnx run
_LAYOUT_ORDER = {Layout.SPLIT: 0, Layout.SINGLE: 1, Layout.HEADS: 2}  # split can do all single can
_ONE_BATCH = (np.zeros(1, dtype=np.int64),)
# Padded tokens per batch when the caller leaves it to the engine. On CPU, batches of about 256
# tokens keep a batch's activations in the core's L2 cache: all-MiniLM-L6-v2 int8 on 2 cores ran the
# benchmark corpus at 1,560 sentences/s with this bound vs 1,320 with 4096 (32 per batch either
# way, two batches at a time; fp32: 825 vs 730). GPUs want big batches.
AUTO_BATCH_TOKENS: dict[Provider, int] = {Provider.CPU: 256, Provider.CUDA: 4096, Provider.TENSORRT: 4096}


def choose_variant(
    bundle: Bundle,
    provider: Provider,
    *,
    precision: Precision | str | None = None,
    layout: Layout | str | None = None,
) -> Variant:
    """The variant to run on ``provider``: ``precision``/``layout`` when given, else the best fit.

    Precision by provider (CPU: int8-dynamic > fp32 > int8-static > fp16; CUDA: fp16 > fp32 > ...;
    TensorRT: int8-static > fp16 > fp32); layout split > single > heads-only.
    """
    m = bundle.manifest
    have = [v.key for v in m.variants]
    cands = list(m.variants)
    if layout is not None:
        try:
            lay = Layout(layout)
        except ValueError:
            raise ConfigError(f"layout: {layout!r} is not one of {[x.value for x in Layout]}") from None
        cands = [v for v in cands if v.layout is lay]
    elif any(v.layout is not Layout.HEADS for v in cands):
        cands = [v for v in cands if v.layout is not Layout.HEADS]
    if precision is not None:
        try:
            prec = Precision(precision)
        except ValueError:
            raise ConfigError(
                f"precision: {precision!r} is not one of {[p.value for p in Precision]}"
            ) from None
        cands = [v for v in cands if v.precision is prec]
    if not cands:
        asked = "/".join(str(x.value if hasattr(x, "value") else x) for x in (precision, layout) if x)
        raise BundleError(f"{bundle.root}: no variant {asked} in this bundle; it has {have}")
    rank = {p: i for i, p in enumerate(precision_preference(provider))}
    return min(cands, key=lambda v: (rank[v.precision], _LAYOUT_ORDER[v.layout]))


def _graph_optimization(value: GraphOptimization | str) -> GraphOptimization:
    try:
        return GraphOptimization(value)
    except ValueError:
        raise ConfigError(
            f"graph_optimization: {value!r} is not one of {[g.value for g in GraphOptimization]}"
        ) from None


@dataclass(frozen=True, slots=True)
class _Graph:
    session: ort.InferenceSession
    inputs: tuple[str, ...]
    outputs: frozenset[str]
    path: Path


@dataclass(frozen=True, slots=True)
class _HeadSet:
    """The heads an engine answers with; replaced whole by ``swap_heads``."""

    heads: dict[str, HeadInfo]  # label heads (sentence + token) by name, manifest order
    heads_graph: _Graph | None  # split/heads layouts: embedding -> sentence heads
    token_graph: _Graph | None  # split/heads layouts: token_states -> token heads
    source: Path  # bundle the heads came from
    encoder_sha256: str | None
    sentence_names: tuple[str, ...]  # default selection, prebuilt for the per-call fast path
    sentence_outputs: tuple[str, ...]
    decodings: dict[str, HeadDecoding]  # the manifest's temperatures and thresholds (no per-call overrides)


def _graph_io(session: ort.InferenceSession, path: Path) -> _Graph:
    return _Graph(
        session=session,
        inputs=tuple(i.name for i in session.get_inputs()),
        outputs=frozenset(o.name for o in session.get_outputs()),
        path=path,
    )


def _require_outputs(graph: _Graph, names: Iterable[str], root: Path) -> None:
    missing = sorted(set(names) - graph.outputs)
    if missing:
        raise BundleError(
            f"{root}: {graph.path.name}: outputs {missing} named in {MANIFEST_NAME} are not graph outputs "
            f"(graph has {sorted(graph.outputs)})"
        )


class Engine:
    """A loaded bundle, ready to answer. Build it with :meth:`Engine.load`."""

    def __init__(
        self,
        bundle: Bundle,
        variant: Variant,
        plan: ProviderPlan,
        settings: SessionSettings,
        *,
        batch_size: int,
        max_batch_tokens: int | None,
        embedding_cache: int,
        parallel_batches: int = 1,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        if (
            not isinstance(parallel_batches, int)
            or isinstance(parallel_batches, bool)
            or parallel_batches < 1
        ):
            raise ConfigError(f"parallel_batches: expected an integer >= 1, got {parallel_batches!r}")
        self.bundle = bundle
        self.variant = variant
        self.settings = settings
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.parallel_batches = parallel_batches
        # worker threads for the batches of one request (started on first use; ORT releases the GIL)
        self._pool = (
            ThreadPoolExecutor(max_workers=parallel_batches, thread_name_prefix="mtst-batch")
            if parallel_batches > 1
            else None
        )
        self._plan = plan
        self._heads_settings = dataclasses.replace(settings, intra_op_threads=1, inter_op_threads=1)
        self._swap_lock = threading.Lock()
        m = bundle.manifest
        self.cache = EmbeddingCache(embedding_cache) if embedding_cache else None

        self._model: _Graph | None = None  # single: model.onnx
        self._encoder: _Graph | None = None  # split: encoder.onnx
        active: tuple[Provider, ...] = ()
        if variant.layout is Layout.SINGLE:
            self._model, active = self._session(variant.graphs["model"], settings)
            _require_outputs(
                self._model, ["embedding", *(h.output for h in self._label_heads(m.heads))], bundle.root
            )
        elif variant.layout is Layout.SPLIT:
            self._encoder, active = self._session(variant.graphs["encoder"], settings)
            _require_outputs(self._encoder, ["embedding"], bundle.root)
        runner = self._model or self._encoder
        self._tokenizer: TextTokenizer | None = None
        self._feeds: tuple[str, ...] = ()
        if runner is not None:
            extra = sorted(set(runner.inputs) - set(m.inputs))
            if extra:
                raise BundleError(
                    f"{bundle.root}: {runner.path.name}: graph inputs {extra} are not in {MANIFEST_NAME} "
                    f"inputs {list(m.inputs)}"
                )
            self._feeds = runner.inputs
            self._tokenizer = TextTokenizer.from_file(
                bundle.tokenizer_path,
                max_seq_len=m.max_seq_len,
                pad_token_id=m.pad_token_id,
                input_names=m.inputs,
            )
        heads_set, heads_active = self._build_heads(bundle, variant)
        self._heads = heads_set
        self.active_providers: tuple[Provider, ...] = active or heads_active
        logger.info(
            "loaded %s: variant %s, providers %s, heads %s",
            bundle.root,
            variant.key,
            [p.value for p in self.active_providers],
            list(heads_set.heads),
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(
        cls,
        bundle: str | Path,
        *,
        providers: str | Sequence[str | Provider] = "auto",
        allow_fallback: bool = False,
        precision: Precision | str | None = None,
        layout: Layout | str | None = None,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        spinning: bool = False,
        graph_optimization: GraphOptimization | str = GraphOptimization.ALL,
        trt_cache_dir: str | Path | None = None,
        trt_fp16: bool = True,
        batch_size: int = 32,
        max_batch_tokens: int | str | None = "auto",
        embedding_cache: int = 0,
        parallel_batches: int = 1,
        verify: bool = True,
    ) -> Engine:
        """Verify the bundle at ``bundle``, pick a variant, open ONNX Runtime sessions.

        ``providers``: ``"auto"`` or a chain such as ``["tensorrt", "cuda", "cpu"]``; every provider
        named is required unless ``allow_fallback=True`` (ProviderUnavailableError otherwise).
        ``precision``/``layout`` override the automatic choice (see :func:`choose_variant`);
        ``engine.variant`` says what was picked. ``embedding_cache=N`` keeps the embeddings of the
        last N texts. ``batch_size``/``max_batch_tokens`` bound each length-sorted batch (padded
        tokens; ``"auto"``: :data:`AUTO_BATCH_TOKENS` of the provider, ``None``: no token bound).

        ``parallel_batches=N`` runs up to N batches of one request at once, each on its own thread
        (ONNX Runtime sessions take concurrent runs). With ``intra_op_threads=1`` this is the CPU setting
        for both latency and throughput on a few cores: a one-text request runs on one core, with no
        worker threads to wake between the graph's ops, and a long list is cut into at least N batches
        that run side by side.
        """
        settings = SessionSettings(
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            spinning=bool(spinning),
            graph_optimization=_graph_optimization(graph_optimization),
            trt_cache_dir=Path(trt_cache_dir) if trt_cache_dir is not None else None,
            trt_fp16=bool(trt_fp16),
        )
        if embedding_cache and not isinstance(embedding_cache, int):
            raise ConfigError(f"embedding_cache: expected an integer >= 0, got {embedding_cache!r}")
        plan = resolve_providers(providers, allow_fallback=allow_fallback)
        if max_batch_tokens == "auto":
            max_batch_tokens = AUTO_BATCH_TOKENS[plan.primary]
        if max_batch_tokens is not None and (
            not isinstance(max_batch_tokens, int)
            or isinstance(max_batch_tokens, bool)
            or max_batch_tokens < 1
        ):
            raise ConfigError(
                f"max_batch_tokens: expected an integer >= 1, None or 'auto', got {max_batch_tokens!r}"
            )
        b = load_bundle(bundle, verify=verify)
        variant = choose_variant(b, plan.primary, precision=precision, layout=layout)
        logger.info(
            "bundle %s: picked variant %s for provider %s%s",
            b.root,
            variant.key,
            plan.primary.value,
            "" if precision is None else " (precision requested)",
        )
        engine = cls(
            b,
            variant,
            plan,
            settings,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            embedding_cache=embedding_cache,
            parallel_batches=parallel_batches,
        )
        primary_active = engine.active_providers[0] if engine.active_providers else Provider.CPU
        if precision is None and layout is None and primary_active is not plan.primary:
            better = choose_variant(b, primary_active)
            if better.key != variant.key:  # fell back (allowed): run the variant made for what runs
                logger.warning(
                    "running on %s, not %s: switching variant %s -> %s",
                    primary_active.value,
                    plan.primary.value,
                    variant.key,
                    better.key,
                )
                engine = cls(
                    b,
                    better,
                    plan,
                    settings,
                    batch_size=batch_size,
                    max_batch_tokens=max_batch_tokens,
                    embedding_cache=embedding_cache,
                    parallel_batches=parallel_batches,
                )
        return engine

    def _session(
        self, name: str, settings: SessionSettings, bundle: Bundle | None = None
    ) -> tuple[_Graph, tuple[Provider, ...]]:
        b = bundle or self.bundle
        path = b.path(name)
        try:
            session, active = create_session(path, self._plan, settings, what=f"{b.root}: {name}")
        except ort.capi.onnxruntime_pybind11_state.Fail as exc:  # type: ignore[attr-defined]
            raise BundleError(f"{b.root}: {name}: ONNX Runtime cannot load it ({exc})") from None
        except ort.capi.onnxruntime_pybind11_state.InvalidProtobuf as exc:  # type: ignore[attr-defined]
            raise BundleError(f"{b.root}: {name}: not a valid ONNX model ({exc})") from None
        return _graph_io(session, path), active

    @staticmethod
    def _label_heads(heads: Iterable[HeadInfo]) -> list[HeadInfo]:
        return [h for h in heads if h.kind is not HeadKind.EMBEDDING]

    def _build_heads(self, bundle: Bundle, variant: Variant) -> tuple[_HeadSet, tuple[Provider, ...]]:
        m = bundle.manifest
        heads = {h.name: h for h in self._label_heads(m.heads)}
        sentence = [h for h in heads.values() if h.kind is HeadKind.SENTENCE]
        token = [h for h in heads.values() if h.kind is HeadKind.TOKEN]
        heads_graph = token_graph = None
        active: tuple[Provider, ...] = ()
        if variant.layout is not Layout.SINGLE:
            heads_graph, active = self._session(variant.graphs["heads"], self._heads_settings, bundle)
            if "embedding" not in heads_graph.inputs:
                raise BundleError(
                    f"{bundle.root}: {variant.graphs['heads']}: expected input 'embedding', "
                    f"graph takes {list(heads_graph.inputs)}"
                )
            _require_outputs(heads_graph, [h.output for h in sentence], bundle.root)
            if token:
                if "token_heads" not in variant.graphs:
                    raise BundleError(
                        f"{bundle.root}: {MANIFEST_NAME}: token heads {[h.name for h in token]} but variant "
                        f"{variant.key} has no token_heads graph"
                    )
                token_graph, _ = self._session(variant.graphs["token_heads"], self._heads_settings, bundle)
                if "token_states" not in token_graph.inputs:
                    raise BundleError(
                        f"{bundle.root}: {variant.graphs['token_heads']}: expected input 'token_states', "
                        f"graph takes {list(token_graph.inputs)}"
                    )
                _require_outputs(token_graph, [h.output for h in token], bundle.root)
                if self._encoder is not None:
                    _require_outputs(self._encoder, ["token_states"], bundle.root)
        hs = _HeadSet(
            heads=heads,
            heads_graph=heads_graph,
            token_graph=token_graph,
            source=bundle.root,
            encoder_sha256=m.encoder_sha256,
            sentence_names=tuple(h.name for h in sentence),
            sentence_outputs=tuple(h.output for h in sentence),
            decodings=head_decodings(heads.values()),
        )
        return hs, active

    # ------------------------------------------------------------------ facts
    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest

    @property
    def heads(self) -> dict[str, HeadInfo]:
        """The label heads this engine answers with now (after any swap)."""
        return dict(self._heads.heads)

    @property
    def heads_source(self) -> Path:
        return self._heads.source

    @property
    def embedding_dim(self) -> int:
        return int(self.bundle.manifest.embedding_dim)

    @property
    def has_encoder(self) -> bool:
        return self._tokenizer is not None

    def __repr__(self) -> str:
        return (
            f"Engine({str(self.bundle.root)!r}, variant={self.variant.key!r}, "
            f"providers={[p.value for p in self.active_providers]}, heads={list(self._heads.heads)})"
        )

    # ------------------------------------------------------------------ helpers
    def _need_encoder(self) -> TextTokenizer:
        if self._tokenizer is None:
            raise BundleError(
                f"{self.bundle.root}: a heads-only bundle has no encoder: use predict_from_embeddings(), "
                f"or load a split bundle and swap these heads into it"
            )
        return self._tokenizer

    @staticmethod
    def _select(hs: _HeadSet, heads: Iterable[str] | str | None) -> list[HeadInfo]:
        if heads is None:
            return list(hs.heads.values())
        names = [heads] if isinstance(heads, str) else list(heads)
        for i, n in enumerate(names):
            if not isinstance(n, str):
                raise TypeError(f"heads[{i}]: expected a head name (str), got {type(n).__name__}")
        unknown = [n for n in names if n not in hs.heads]
        if unknown:
            hint = (
                " (the embedding is not a head: use embed() or return_embedding=True)"
                if "embedding" in unknown
                else ""
            )
            raise ConfigError(f"heads: unknown head(s) {unknown}; this engine has {list(hs.heads)}{hint}")
        return [hs.heads[n] for n in dict.fromkeys(names)]

    def _batches(self, lengths: np.ndarray) -> tuple[np.ndarray, ...]:
        n = len(lengths)
        if n == 1:  # batch-1 requests: nothing to plan
            return _ONE_BATCH
        # with parallel workers, a request that fits one batch is cut in one batch per worker
        per_worker = -(-n // self.parallel_batches)
        size = min(self.batch_size, per_worker)
        return plan_batches(lengths, max_batch=size, max_tokens=self.max_batch_tokens).batches

    def _run_batches(self, batches: Sequence[np.ndarray], work: Callable[[np.ndarray], None]) -> None:
        """``work(idx)`` for every batch: in order, or on the worker threads (longest batches first)."""
        if self._pool is None or len(batches) == 1:
            for idx in batches:
                work(idx)
            return
        # batches come sorted by length: handing out the longest first balances the workers
        for _ in self._pool.map(work, reversed(batches)):
            pass

    def _encode_embeddings(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Encoder pass for embeddings only: (N, dim) float32 and truncated flags, in input order."""
        tok = self._need_encoder()
        encs, truncated = tok.encode(texts)
        runner = self._model or self._encoder
        assert runner is not None  # has an encoder: checked by _need_encoder
        out = np.empty((len(texts), self.embedding_dim), dtype=np.float32)
        lengths = np.fromiter((len(e) for e in encs), dtype=np.int64, count=len(encs))

        def work(idx: np.ndarray) -> None:
            feeds = tok.pad([encs[i] for i in idx.tolist()])
            (emb,) = runner.session.run(["embedding"], {k: feeds[k] for k in self._feeds})
            out[idx] = emb

        self._run_batches(self._batches(lengths), work)
        return out, truncated

    def _embed_chunk(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self.cache is None:
            return self._encode_embeddings(texts)
        out = np.empty((len(texts), self.embedding_dim), dtype=np.float32)
        truncated = np.zeros(len(texts), dtype=bool)
        missing: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            hit = self.cache.get(t)
            if hit is None:
                missing.setdefault(t, []).append(i)
            else:
                out[i], truncated[i] = hit
        if missing:
            todo = list(missing)
            emb, trunc = self._encode_embeddings(todo)
            for j, t in enumerate(todo):
                self.cache.put(t, emb[j], bool(trunc[j]))
                for i in missing[t]:
                    out[i] = emb[j]
                    truncated[i] = trunc[j]
        return out, truncated

    @staticmethod
    def _sentence_logits(hs: _HeadSet, emb: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        assert hs.heads_graph is not None
        if len(emb) <= _HEADS_ROWS:
            return hs.heads_graph.session.run(list(outputs), {"embedding": emb})  # type: ignore[no-any-return]
        parts = [
            hs.heads_graph.session.run(list(outputs), {"embedding": emb[s : s + _HEADS_ROWS]})
            for s in range(0, len(emb), _HEADS_ROWS)
        ]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(outputs))]

    # ------------------------------------------------------------------ public API
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Pooled, L2-normalized embeddings ``(N, dim)`` float32, in input order."""
        items = check_texts(texts)
        self._need_encoder()
        if not items:
            return np.empty((0, self.embedding_dim), dtype=np.float32)
        parts = [self._embed_chunk(items[s : s + _CHUNK])[0] for s in range(0, len(items), _CHUNK)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def predict(
        self,
        texts: Sequence[str],
        *,
        heads: Iterable[str] | str | None = None,
        return_embedding: bool = False,
        return_logits: bool = False,
        min_entity_score: float = 0.0,
        thresholds: Mapping[str, float] | None = None,
        abstain: bool = True,
    ) -> list[Prediction]:
        """One :class:`Prediction` per text, in input order; only the named ``heads`` run (default: all).

        Scores are calibrated with each head's temperature (manifest). A sentence head whose score is
        under its threshold answers with ``abstained=True``; a token head drops entities scored under
        its threshold. ``thresholds={"intent": 0.5}`` overrides a head's threshold for this call;
        ``abstain=False`` turns thresholds off (every sentence answered, every entity kept).
        ``min_entity_score`` also drops entities whose score (the mean probability of their words'
        tags) is below it, whatever the thresholds. ``return_logits`` gives the raw logits.
        """
        hs = self._heads  # one read: a concurrent swap_heads does not change this call's heads
        dec = self._decodings(hs, thresholds, abstain, min_entity_score) or hs.decodings
        items = check_texts(texts)
        tok = self._need_encoder()
        selected = self._select(hs, heads)
        out: list[Prediction] = []
        for s in range(0, len(items), _CHUNK):
            chunk = items[s : s + _CHUNK]
            out.extend(self._predict_chunk(tok, hs, chunk, selected, return_embedding, return_logits, dec))
        return out

    @staticmethod
    def _decodings(
        hs: _HeadSet, thresholds: Mapping[str, float] | None, abstain: bool, min_entity_score: float
    ) -> dict[str, HeadDecoding] | None:
        """A call's decodings, None for the manifest's own (no overrides: the prebuilt ones)."""
        plain_floor = type(min_entity_score) is not bool and min_entity_score == 0
        if thresholds is None and abstain is True and plain_floor:
            return None
        return head_decodings(
            hs.heads.values(), thresholds=thresholds, abstain=bool(abstain), min_entity_score=min_entity_score
        )

    def _predict_chunk(
        self,
        tok: TextTokenizer,
        hs: _HeadSet,
        texts: list[str],
        selected: list[HeadInfo],
        return_embedding: bool,
        return_logits: bool,
        dec: Mapping[str, HeadDecoding],
    ) -> list[Prediction]:
        n = len(texts)
        sent = [h for h in selected if h.kind is HeadKind.SENTENCE]
        token = [h for h in selected if h.kind is HeadKind.TOKEN]
        per_item: list[dict[str, Any]] = [{} for _ in range(n)]
        logits_out: list[dict[str, np.ndarray]] = [{} for _ in range(n)]
        sent_logits: dict[str, np.ndarray] = {}

        if self._encoder is not None and not token:
            # split layout, sentence heads only: embeddings (cached when enabled), then heads.onnx once
            emb, truncated = self._embed_chunk(texts)
            if sent:
                for h, lg in zip(sent, self._sentence_logits(hs, emb, [h.output for h in sent]), strict=True):
                    sent_logits[h.name] = lg
        else:
            encs, truncated = tok.encode(texts)
            lengths = np.fromiter((len(e) for e in encs), dtype=np.int64, count=n)
            batches = self._batches(lengths)
            whole = len(batches) == 1 and n == 1  # one text: outputs are already in input order
            emb = (
                np.empty((0, 0), dtype=np.float32) if whole else np.empty((n, self.embedding_dim), np.float32)
            )
            if not whole:
                for h in sent:
                    sent_logits[h.name] = np.empty((n, len(h.labels)), dtype=np.float32)
            if self._model is not None:
                names = ["embedding", *(h.output for h in sent), *(h.output for h in token)]
                runner = self._model
            else:
                assert self._encoder is not None
                names = ["embedding", "token_states"]
                runner = self._encoder
            feeds_wanted = self._feeds
            model = self._model
            token_graph = hs.token_graph
            token_outputs = [h.output for h in token]

            def work(idx: np.ndarray) -> None:
                nonlocal emb
                batch = encs if whole else [encs[i] for i in idx.tolist()]
                feeds = tok.pad(batch)
                outs = runner.session.run(names, {k: feeds[k] for k in feeds_wanted})
                if whole:
                    emb = outs[0]
                else:
                    emb[idx] = outs[0]
                if model is not None:
                    for h, lg in zip(sent, outs[1 : 1 + len(sent)], strict=True):
                        if whole:
                            sent_logits[h.name] = lg
                        else:
                            sent_logits[h.name][idx] = lg
                    tok_logits = outs[1 + len(sent) :]
                else:
                    assert token_graph is not None
                    tok_logits = token_graph.session.run(token_outputs, {"token_states": outs[1]})
                for h, lg in zip(token, tok_logits, strict=True):  # lg: (B, T, L)
                    for j, i in enumerate(idx.tolist()):
                        e = batch[j]
                        row = lg[j, : len(e)]
                        per_item[i][h.name] = decode_tokens(
                            texts[i], row, e.word_ids, e.offsets, h.labels, dec[h.name]
                        )
                        if return_logits:
                            logits_out[i][h.name] = np.array(row, copy=True)

            self._run_batches(batches, work)
            if self._encoder is not None and sent:
                for h, lg in zip(sent, self._sentence_logits(hs, emb, [h.output for h in sent]), strict=True):
                    sent_logits[h.name] = lg
        for h in sent:
            lg = sent_logits[h.name]
            for i, label in enumerate(decode_sentence(lg, h.labels, dec[h.name])):
                per_item[i][h.name] = label
                if return_logits:
                    logits_out[i][h.name] = lg[i]
        if return_embedding:
            emb.flags.writeable = False
        order = [h.name for h in selected]
        return [
            Prediction(
                text=texts[i],
                heads={name: per_item[i][name] for name in order},
                embedding=emb[i] if return_embedding else None,
                truncated=bool(truncated[i]),
                logits={name: logits_out[i][name] for name in order} if return_logits else None,
            )
            for i in range(n)
        ]

    def predict_from_embeddings(
        self,
        embeddings: np.ndarray,
        *,
        heads: Iterable[str] | str | None = None,
        thresholds: Mapping[str, float] | None = None,
        abstain: bool = True,
    ) -> list[dict[str, SentenceLabel]]:
        """Sentence heads on precomputed embeddings ``(N, dim)`` (or one ``(dim,)``): heads.onnx alone.

        Needs a split or heads-only bundle (single-graph bundles keep the heads inside model.onnx).
        ``thresholds``/``abstain`` as in :meth:`predict`.
        """
        hs = self._heads
        dec = self._decodings(hs, thresholds, abstain, 0.0) or hs.decodings
        if hs.heads_graph is None:
            raise BundleError(
                f"{self.bundle.root}: variant {self.variant.key} has no separate heads graph: "
                f"predict_from_embeddings needs a split or heads-only bundle (export with split=True)"
            )
        if heads is None:
            names, outputs = hs.sentence_names, hs.sentence_outputs
        else:
            sel = self._select(hs, heads)
            bad = [h.name for h in sel if h.kind is not HeadKind.SENTENCE]
            if bad:
                raise ConfigError(f"heads: {bad} are token heads and need token states: use predict(texts)")
            names, outputs = tuple(h.name for h in sel), tuple(h.output for h in sel)
        emb = embeddings if isinstance(embeddings, np.ndarray) and embeddings.dtype == np.float32 else None
        if emb is None:
            try:
                emb = np.asarray(embeddings, dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"embeddings: expected a float array (N, {self.embedding_dim}), got {exc}"
                ) from None
        if emb.ndim == 1:
            emb = emb[None, :]
        if emb.ndim != 2 or emb.shape[1] != self.embedding_dim:
            raise ValueError(
                f"embeddings: expected shape (N, {self.embedding_dim}) or ({self.embedding_dim},), got {embeddings.shape}"
            )
        if not outputs or len(emb) == 0:
            return [{} for _ in range(len(emb))]
        if not np.isfinite(emb).all():
            bad_rows = np.flatnonzero(~np.isfinite(emb).all(axis=1))
            raise ValueError(f"embeddings[{int(bad_rows[0])}]: contains NaN or infinity")
        logits = self._sentence_logits(hs, emb, outputs)
        decoded = [
            decode_sentence(lg, hs.heads[name].labels, dec[name])
            for name, lg in zip(names, logits, strict=True)
        ]
        return [dict(zip(names, row, strict=True)) for row in zip(*decoded, strict=True)]

    def swap_heads(self, bundle: str | Path, *, verify: bool = True) -> None:
        """Replace the heads with those of another bundle (heads-only or split) built for the same encoder.

        The new bundle is verified and its sessions opened before the switch; the switch itself is one
        reference assignment, so calls already running finish on the old heads and none fails.
        """
        if self.variant.layout is Layout.SINGLE:
            raise BundleError(
                f"{self.bundle.root}: variant {self.variant.key} keeps its heads inside model.onnx: "
                f"swap_heads needs an engine loaded from a split bundle"
            )
        b = load_bundle(bundle, verify=verify)
        m = b.manifest
        mine = self._heads.encoder_sha256
        theirs = m.encoder_sha256
        if not theirs:
            raise BundleError(
                f"{b.root}: {MANIFEST_NAME}: encoder_sha256 missing: cannot tell which encoder these heads were built for"
            )
        if not mine:
            raise BundleError(
                f"{self.bundle.root}: {MANIFEST_NAME}: encoder_sha256 missing: cannot check that new heads fit this encoder"
            )
        if theirs != mine:
            raise BundleError(
                f"{b.root}: heads were built for encoder {theirs}, but this engine runs encoder {mine} "
                f"({self.bundle.root}); refusing to swap"
            )
        if m.embedding_dim != self.embedding_dim:
            raise BundleError(
                f"{b.root}: {MANIFEST_NAME}: embedding_dim {m.embedding_dim}, this engine's is {self.embedding_dim}"
            )
        cands = [v for v in m.variants if v.layout in (Layout.HEADS, Layout.SPLIT)]
        if not cands:
            raise BundleError(
                f"{b.root}: no heads-only or split variant to take heads from; it has {[v.key for v in m.variants]}"
            )
        cands.sort(
            key=lambda v: (v.precision is not self.variant.precision, v.precision is not Precision.FP32)
        )
        with self._swap_lock:
            new, _ = self._build_heads(b, cands[0])
            old = self._heads
            self._heads = new
        logger.info("heads swapped: %s -> %s (%s)", list(old.heads), list(new.heads), b.root)
