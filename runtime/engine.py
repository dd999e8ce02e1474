"""The engine: a verified bundle, ONNX Runtime sessions on the chosen providers, and typed answers.

::

    engine = Engine.load("bundle/", providers=["cuda", "cpu"])   # or "auto"
    engine.predict(["Apple opened an office in Paris."])[0].heads["ner"].entities
    emb = engine.embed(texts)                                    # (N, dim) float32, L2-normalized
    engine.predict_from_embeddings(emb)                          # split bundles: heads.onnx alone
    engine.swap_heads("new-heads/")                              # same encoder only (hash-checked)

The graphs of the variant run behind one runner (``mtst.runtime.runners``: single graph or split);
the engine tokenizes, cuts length-sorted batches, and decodes. One engine serves many threads: ONNX
Runtime sessions and the tokenizer are safe for concurrent use, the embedding cache holds a lock,
and the swappable heads (with the runner that computes them) live in one immutable object that each
call reads once, so a call that started before ``swap_heads`` finishes on the old heads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtst.errors import BundleError, ConfigError, parse_enum
from mtst.runtime.batching import AUTO_BATCH_TOKENS, Batcher, check_positive
from mtst.runtime.bundle import Bundle, load_bundle
from mtst.runtime.cache import EmbeddingCache
from mtst.runtime.inputs import check_embeddings, check_head_logits
from mtst.runtime.manifest import (
    BATCH_DEPENDENT,
    HeadInfo,
    HeadKind,
    Layout,
    Manifest,
    Precision,
    Variant,
)
from mtst.runtime.providers import GraphOptimization, Provider, SessionSettings, resolve_providers
from mtst.runtime.results import (
    DeviceArrays,
    HeadDecoding,
    Prediction,
    SentenceLabel,
    call_decodings,
    decode_sentence,
    token_sink,
)
from mtst.runtime.runners import EMBEDDING, IoBinding, Runner
from mtst.runtime.tokenize import TextTokenizer, check_texts
from mtst.runtime.trt import tensorrt_settings
from mtst.runtime.variants import (
    HeadSet,
    Sessions,
    choose_variant,
    open_swapped_heads,
    open_variant,
    swap_variant,
)

__all__ = ["AUTO_BATCH_TOKENS", "Engine", "choose_variant"]

logger = logging.getLogger(__name__)

_CHUNK = 4096  # texts tokenized at once: bounds memory for huge lists; results stream out in order
_HEADS_ROWS = 4096  # embeddings per heads.onnx run


class Engine:
    """A loaded bundle, ready to answer. Build it with :meth:`Engine.load`."""

    def __init__(
        self,
        bundle: Bundle,
        variant: Variant,
        runner: Runner,
        sessions: Sessions,
        *,
        batch_size: int,
        max_batch_tokens: int | None,
        embedding_cache: int,
        parallel_batches: int = 1,
    ) -> None:
        self._batcher = Batcher(
            batch_size=batch_size, max_batch_tokens=max_batch_tokens, parallel_batches=parallel_batches
        )
        self.bundle = bundle
        self.variant = variant
        self.settings = sessions.settings
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.parallel_batches = parallel_batches
        self._sessions = sessions
        self._swap_lock = threading.Lock()
        self.cache = EmbeddingCache(embedding_cache) if embedding_cache else None
        # a batch-dependent precision's cache computes each miss alone: a cached embedding is then the
        # text's own, not one that depends on whichever batch the text first came in
        self._cache_alone = variant.precision in BATCH_DEPENDENT
        m = bundle.manifest
        tokenizer_json = bundle.data(m.tokenizer) if m.tokenizer and runner.encoder is not None else None
        bundle.release()  # the sessions hold what they need: the graph bytes go before the tokenizer comes
        self._tokenizer = (
            TextTokenizer.from_bytes(
                tokenizer_json or b"",
                str(bundle.tokenizer_path),
                max_seq_len=m.max_seq_len,
                pad_token_id=m.pad_token_id,
                input_names=m.inputs,
            )
            if runner.encoder is not None
            else None
        )
        self._heads = HeadSet.of(bundle, runner)
        self.active_providers: tuple[Provider, ...] = runner.graphs[0].providers
        logger.info("loaded %r", self)

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
        trt_profiles_from: str | Path | None = None,
        batch_size: int = 32,
        max_batch_tokens: int | str | None = "auto",
        embedding_cache: int = 0,
        parallel_batches: int = 1,
        io_binding: IoBinding = "auto",
        verify: bool = True,
    ) -> Engine:
        """Verify the bundle at ``bundle``, pick a variant, open ONNX Runtime sessions.

        ``providers``: ``"auto"`` or a chain such as ``["tensorrt", "cuda", "cpu"]``; every provider
        named is required unless ``allow_fallback=True`` (ProviderUnavailableError otherwise).
        ``precision``/``layout`` override the automatic choice (see :func:`choose_variant`);
        ``engine.variant`` says what was picked. ``embedding_cache=N`` keeps the embeddings of the
        last N texts (on int8-dynamic, whose answers depend on the batch, each text is computed alone
        for the cache, so that what it hands back does not depend on the request it came in). ``batch_size``/``max_batch_tokens`` bound each length-sorted batch (padded
        tokens; ``"auto"``: :data:`AUTO_BATCH_TOKENS` of the provider, ``None``: no token bound).

        ``parallel_batches=N`` runs up to N batches of one request at once, each on its own thread
        (ONNX Runtime sessions take concurrent runs). With ``intra_op_threads=1`` this is the CPU setting
        for both latency and throughput on a few cores: a one-text request runs on one core, with no
        worker threads to wake between the graph's ops, and a long list is cut into at least N batches
        that run side by side.

        ``io_binding``: run the graphs through ONNX Runtime IO binding (inputs copied to the device once,
        a split bundle's embeddings handed from encoder to heads on the device); ``"auto"``: on GPUs.
        ``trt_profiles_from``: sentences whose token lengths give the TensorRT shape profiles (else the
        manifest's ``trt_profiles``); ``trt_cache_dir``: engines cached per bundle, GPU and TensorRT
        release below it (:mod:`mtst.runtime.trt`).
        """
        settings = SessionSettings(
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            spinning=bool(spinning),
            graph_optimization=parse_enum(GraphOptimization, graph_optimization, "graph_optimization"),
            trt_cache_dir=Path(trt_cache_dir) if trt_cache_dir is not None else None,
            trt_fp16=bool(trt_fp16),
        )
        if embedding_cache and not isinstance(embedding_cache, int):
            raise ConfigError(f"embedding_cache: expected an integer >= 0, got {embedding_cache!r}")
        plan = resolve_providers(providers, allow_fallback=allow_fallback)
        if max_batch_tokens == "auto":
            max_batch_tokens = AUTO_BATCH_TOKENS[plan.primary]
        if max_batch_tokens is not None:
            check_positive("max_batch_tokens", max_batch_tokens, ", None or 'auto'")
        b = load_bundle(bundle, verify=verify, keep_graphs=())  # sessions: Bundle.graph_source
        if Provider.TENSORRT in plan.chain:
            settings = tensorrt_settings(
                settings,
                b,
                profiles_from=trt_profiles_from,
                batch_size=batch_size,
                batch_tokens=max_batch_tokens,
            )
        sessions = Sessions(plan, settings, io_binding)
        variant, runner = open_variant(b, sessions, precision=precision, layout=layout)
        return cls(
            b,
            variant,
            runner,
            sessions,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,  # type: ignore[arg-type]  # checked above
            embedding_cache=embedding_cache,
            parallel_batches=parallel_batches,
        )

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
    def _select(hs: HeadSet, heads: Iterable[str] | str | None) -> list[HeadInfo]:
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

    # ------------------------------------------------------------------ running
    def _encode_embeddings(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Encoder pass for embeddings only: (N, dim) float32 and truncated flags, in input order."""
        tok = self._need_encoder()
        encs, truncated = tok.encode(texts)
        (emb,) = self._batcher.run(tok, self._heads.runner, encs, [(EMBEDDING, self.embedding_dim)])
        return emb, truncated

    def _encode_alone(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_encode_embeddings` one text at a time (the cache of a batch-dependent precision)."""
        parts = [self._encode_embeddings([t]) for t in texts]
        return np.concatenate([e for e, _ in parts]), np.concatenate([t for _, t in parts])

    def _embed_chunk(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self.cache is None:
            return self._encode_embeddings(texts)
        compute = self._encode_alone if self._cache_alone else self._encode_embeddings
        return self.cache.through(texts, compute, self.embedding_dim)

    @staticmethod
    def _sentence_logits(runner: Runner, emb: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        """Sentence heads on embeddings alone (split and heads-only runners), at most _HEADS_ROWS per run."""
        if len(emb) <= _HEADS_ROWS:
            return runner.run({EMBEDDING: emb}, outputs)
        parts = [
            runner.run({EMBEDDING: emb[s : s + _HEADS_ROWS]}, outputs)
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

    def embed_device(self, texts: Sequence[str]) -> DeviceArrays:
        """The embeddings of :meth:`embed` left where the encoder wrote them (GPU memory on CUDA): one
        ``OrtValue`` per length-sorted batch, with the input indices of its rows."""
        items = check_texts(texts)
        tok = self._need_encoder()
        runner = self._heads.runner
        parts = []
        for s in range(0, len(items), _CHUNK):
            encs, _ = tok.encode(items[s : s + _CHUNK])
            parts += [(idx + s, v) for idx, v in self._batcher.run_device(tok, runner, encs, EMBEDDING)]
        device = runner.graphs[0].device
        return DeviceArrays(parts=tuple(parts), n=len(items), width=self.embedding_dim, device=device)

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

        Scores are calibrated with each head's temperature; a sentence head scored under its threshold
        answers ``abstained=True``, a token head drops entities scored under it (manifest values;
        ``thresholds={"intent": 0.5}`` overrides, ``abstain=False`` turns them off). ``min_entity_score``
        drops entities under it whatever the thresholds (mean probability of their words' tags).
        """
        hs = self._heads  # one read: a concurrent swap_heads does not change this call's heads
        dec = call_decodings(hs.heads.values(), hs.decodings, thresholds, abstain, min_entity_score)
        items = check_texts(texts)
        tok = self._need_encoder()
        selected = self._select(hs, heads)
        out: list[Prediction] = []
        for s in range(0, len(items), _CHUNK):
            chunk = items[s : s + _CHUNK]
            out.extend(
                self._predict_chunk(tok, hs.runner, chunk, selected, return_embedding, return_logits, dec)
            )
        return out

    def _predict_chunk(
        self,
        tok: TextTokenizer,
        runner: Runner,
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
        # split runners take the sentence heads once, on all embeddings (cached ones too)
        late = runner.takes_embeddings
        if late and not token:
            emb, truncated = self._embed_chunk(texts)
            sent_logits = []
        else:
            encs, truncated = tok.encode(texts)
            rows = [(EMBEDDING, self.embedding_dim)]
            rows += [] if late else [(h.output, len(h.labels)) for h in sent]
            sink = token_sink(texts, token, per_item, logits_out if return_logits else None, dec)
            emb, *sent_logits = self._batcher.run(tok, runner, encs, rows, [h.output for h in token], sink)
        if late and sent:
            sent_logits = self._sentence_logits(runner, emb, [h.output for h in sent])
        for h, lg in zip(sent, sent_logits, strict=True):
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
        dec = call_decodings(hs.heads.values(), hs.decodings, thresholds, abstain, 0.0)
        if not hs.runner.takes_embeddings:
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
        emb = check_embeddings(embeddings, self.embedding_dim)
        if not outputs or len(emb) == 0:
            return [{} for _ in range(len(emb))]
        logits = self._sentence_logits(hs.runner, emb, outputs)
        check_head_logits(names, logits, emb)
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
        b, variant = swap_variant(
            bundle, self.bundle, self.variant, self._heads.encoder_sha256, verify=verify
        )
        with self._swap_lock:
            old = self._heads
            runner = open_swapped_heads(old.runner, b, variant, self._sessions)
            new = HeadSet.of(b, runner)
            self._heads = new
        b.release()
        logger.info("heads swapped: %s -> %s (%s)", list(old.heads), list(new.heads), b.root)
