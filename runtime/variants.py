"""Which variant of a bundle an engine runs, and its graphs opened and checked against the manifest.

- :func:`choose_variant`: the variant for a provider (or the precision/layout asked for);
- :func:`open_variant`: that variant's runner, its sessions on the provider plan; when ONNX Runtime
  runs another provider than the plan's first (a fallback the caller allowed), the sessions of the
  variant made for the provider that really runs;
- :func:`swap_variant` / :func:`open_swapped_heads`: the heads of another bundle, built for the
  same encoder, on the engine's encoder (``Engine.swap_heads``);
- :class:`HeadSet`: the heads an engine answers with, their runner and decodings, replaced whole.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtst.errors import BundleError, parse_enum
from mtst.runtime.bundle import Bundle, load_bundle
from mtst.runtime.consistency import check_dims
from mtst.runtime.manifest import (
    MANIFEST_NAME,
    HeadInfo,
    HeadKind,
    Layout,
    Precision,
    Variant,
    parse_precision,
)
from mtst.runtime.providers import (
    Provider,
    ProviderPlan,
    SessionSettings,
    create_session,
    precision_preference,
)
from mtst.runtime.results import HeadDecoding, head_decodings
from mtst.runtime.runners import (
    IoBinding,
    Runner,
    SessionOpener,
    SplitRunner,
    check_encoder,
    check_heads,
    open_heads,
    open_runner,
)

__all__ = [
    "HeadSet",
    "Sessions",
    "choose_variant",
    "open_swapped_heads",
    "open_variant",
    "swap_variant",
]

logger = logging.getLogger("mtst.runtime.engine")  # the engine's decisions, logged under its name

_LAYOUT_ORDER = {Layout.SPLIT: 0, Layout.SINGLE: 1, Layout.HEADS: 2}  # split can do all single can


def choose_variant(
    bundle: Bundle,
    provider: Provider,
    *,
    precision: Precision | str | None = None,
    layout: Layout | str | None = None,
) -> Variant:
    """The variant to run on ``provider``: ``precision``/``layout`` when given, else the best fit.

    Precision by provider (:func:`~mtst.runtime.providers.precision_preference`; CPU: int8-static-cpu >
    int8-dynamic > fp32 > ...; CUDA: fp16 > fp32 > ...; TensorRT: int8-static > fp16 > fp32); layout
    split > single > heads-only.
    """
    m = bundle.manifest
    have = [v.key for v in m.variants]
    cands = list(m.variants)
    if layout is not None:
        lay = parse_enum(Layout, layout, "layout")
        cands = [v for v in cands if v.layout is lay]
    elif any(v.layout is not Layout.HEADS for v in cands):
        cands = [v for v in cands if v.layout is not Layout.HEADS]
    if precision is not None:
        prec = parse_precision(precision, "precision")
        cands = [v for v in cands if v.precision is prec]
    if not cands:
        asked = "/".join(str(x.value if hasattr(x, "value") else x) for x in (precision, layout) if x)
        raise BundleError(f"{bundle.root}: no variant {asked} in this bundle; it has {have}")
    rank = {p: i for i, p in enumerate(precision_preference(provider))}
    return min(cands, key=lambda v: (rank[v.precision], _LAYOUT_ORDER[v.layout]))


@dataclass(frozen=True, slots=True)
class Sessions:
    """How an engine opens its sessions: on the provider plan, with the session settings."""

    plan: ProviderPlan
    settings: SessionSettings
    io_binding: IoBinding = False  # see mtst.runtime.runners

    def opener(self, bundle: Bundle) -> SessionOpener:
        """Sessions for the graphs of ``bundle``: the encoder with the caller's settings, the heads
        graphs (a few small matrix products) on one thread each. A verified bundle's sessions are built
        from the bytes it verified (the graph and its external data), never from the files again."""
        plan, settings = self.plan, self.settings
        # the heads graphs take embeddings, not token inputs: TensorRT picks their shape ranges itself
        heads_settings = dataclasses.replace(
            settings, intra_op_threads=1, inter_op_threads=1, trt_profiles=()
        )
        root = bundle.root

        def open_session(role: str, path: Path) -> Any:
            chosen = heads_settings if role in ("heads", "token_heads") else settings
            name = path.relative_to(root).as_posix()
            what = f"{root}: {name}"
            if not bundle.verified:
                return create_session(path, plan, chosen, what=what)
            with bundle.graph_source(name) as model:
                return create_session(
                    model, plan, chosen, what=what, external_data=bundle.external_data(name)
                )

        return open_session


def _open_checked(
    b: Bundle, variant: Variant, open_session: SessionOpener, io_binding: IoBinding = False
) -> Runner:
    m = b.manifest
    runner = open_runner(
        b.root,
        variant,
        open_session,
        token_heads=any(h.kind is HeadKind.TOKEN for h in m.heads),
        io_binding=io_binding,
    )
    check_encoder(runner, m.inputs, b.root)
    check_heads(runner, variant, m.heads, b.root)
    check_dims(runner, m, b.root)
    return runner


def open_variant(
    b: Bundle,
    sessions: Sessions,
    *,
    precision: Precision | str | None = None,
    layout: Layout | str | None = None,
) -> tuple[Variant, Runner]:
    """The variant for the plan's first provider (see :func:`choose_variant`), its sessions opened.

    When ONNX Runtime runs another provider (a fallback the caller allowed) and neither precision nor
    layout was asked for, the sessions of the variant made for the provider that runs replace them.
    """
    plan = sessions.plan
    variant = choose_variant(b, plan.primary, precision=precision, layout=layout)
    if variant.precision is Precision.INT8_STATIC and Provider.TENSORRT in plan.chain:
        sessions = dataclasses.replace(
            sessions, settings=dataclasses.replace(sessions.settings, trt_int8=True)
        )
    logger.info(
        "bundle %s: picked variant %s for provider %s%s",
        b.root,
        variant.key,
        plan.primary.value,
        "" if precision is None else " (precision requested)",
    )
    open_session = sessions.opener(b)
    runner = _open_checked(b, variant, open_session, sessions.io_binding)
    active = runner.graphs[0].providers
    running = active[0] if active else Provider.CPU
    if precision is None and layout is None and running is not plan.primary:
        better = choose_variant(b, running)
        if better.key != variant.key:  # fell back (allowed): run the variant made for what runs
            logger.warning(
                "running on %s, not %s: switching variant %s -> %s",
                running.value,
                plan.primary.value,
                variant.key,
                better.key,
            )
            variant, runner = better, _open_checked(b, better, open_session, sessions.io_binding)
    return variant, runner


def swap_variant(
    path: str | Path, current: Bundle, variant: Variant, encoder_sha256: str | None, *, verify: bool = True
) -> tuple[Bundle, Variant]:
    """The bundle at ``path`` (verified) and its variant to take heads from, for an engine running
    ``variant`` of ``current``.

    BundleError unless the engine is split, the bundle was built for the same encoder (hash) and
    embedding size, and it has a heads-only or split variant (same precision preferred, then fp32).
    """
    if variant.layout is Layout.SINGLE:
        raise BundleError(
            f"{current.root}: variant {variant.key} keeps its heads inside model.onnx: "
            f"swap_heads needs an engine loaded from a split bundle"
        )
    b = load_bundle(path, verify=verify)
    m = b.manifest
    theirs = m.encoder_sha256
    if not theirs:
        raise BundleError(
            f"{b.root}: {MANIFEST_NAME}: encoder_sha256 missing: cannot tell which encoder these heads were built for"
        )
    if not encoder_sha256:
        raise BundleError(
            f"{current.root}: {MANIFEST_NAME}: encoder_sha256 missing: cannot check that new heads fit this encoder"
        )
    if theirs != encoder_sha256:
        raise BundleError(
            f"{b.root}: heads were built for encoder {theirs}, but this engine runs encoder {encoder_sha256} "
            f"({current.root}); refusing to swap"
        )
    dim = current.manifest.embedding_dim
    if m.embedding_dim != dim:
        raise BundleError(
            f"{b.root}: {MANIFEST_NAME}: embedding_dim {m.embedding_dim}, this engine's is {dim}"
        )
    cands = [v for v in m.variants if v.layout in (Layout.HEADS, Layout.SPLIT)]
    if not cands:
        raise BundleError(
            f"{b.root}: no heads-only or split variant to take heads from; it has {[v.key for v in m.variants]}"
        )
    return b, min(
        cands, key=lambda v: (v.precision is not variant.precision, v.precision is not Precision.FP32)
    )


def open_swapped_heads(runner: Runner, b: Bundle, variant: Variant, sessions: Sessions) -> Runner:
    """``runner``'s encoder with the heads graphs of ``variant`` of ``b``, opened and checked."""
    if not isinstance(runner, SplitRunner):  # pragma: no cover - swap_variant refuses single graphs
        raise BundleError(f"{b.root}: heads can only be swapped into a split engine")
    open_session = sessions.opener(b)
    m = b.manifest
    heads = open_heads(
        b.root,
        variant,
        open_session,
        token_heads=any(h.kind is HeadKind.TOKEN for h in m.heads),
        io_binding=sessions.io_binding,
    )
    swapped = runner.with_heads(*heads)
    check_heads(swapped, variant, m.heads, b.root)
    check_dims(swapped, m, b.root)
    return swapped


@dataclass(frozen=True, slots=True)
class HeadSet:
    """The heads an engine answers with and the runner that computes them; replaced whole by ``swap_heads``."""

    heads: dict[str, HeadInfo]  # label heads (sentence + token) by name, manifest order
    runner: Runner
    source: Path  # bundle the heads came from
    encoder_sha256: str | None
    sentence_names: tuple[str, ...]  # default selection, prebuilt for the per-call fast path
    sentence_outputs: tuple[str, ...]
    decodings: dict[str, HeadDecoding]  # the manifest's temperatures and thresholds (no per-call overrides)

    @classmethod
    def of(cls, bundle: Bundle, runner: Runner) -> HeadSet:
        heads = {h.name: h for h in bundle.manifest.heads if h.kind is not HeadKind.EMBEDDING}
        sentence = [h for h in heads.values() if h.kind is HeadKind.SENTENCE]
        return cls(
            heads=heads,
            runner=runner,
            source=bundle.root,
            encoder_sha256=bundle.manifest.encoder_sha256,
            sentence_names=tuple(h.name for h in sentence),
            sentence_outputs=tuple(h.output for h in sentence),
            decodings=head_decodings(heads.values()),
        )
