"""Execution providers and session options: what the caller asks for, and what ONNX Runtime really runs.

ONNX Runtime silently drops a provider it cannot load (a CUDA build without the CUDA libraries, a
TensorRT provider without TensorRT) and runs on CPU. Here every provider the caller names is
*required*: if it is missing from ``onnxruntime.get_available_providers()`` or from the created
session's ``get_providers()``, the load fails with :class:`~mtst.errors.ProviderUnavailableError`
saying why -- unless ``allow_fallback=True``, which logs a warning instead. ``"auto"`` asks for every
available provider of the chain TensorRT -> CUDA -> CPU and requires none but CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import onnxruntime as ort

from mtst.errors import ConfigError, ProviderUnavailableError, parse_enum
from mtst.runtime.manifest import Precision
from mtst.runtime.shape_profiles import ShapeProfile, profile_options

__all__ = [
    "CPU_DISABLED_OPTIMIZERS",
    "GraphOptimization",
    "Provider",
    "ProviderPlan",
    "SessionSettings",
    "check_active",
    "create_session",
    "disabled_optimizers",
    "precision_preference",
    "resolve_providers",
]

logger = logging.getLogger(__name__)


def _disable_telemetry() -> None:
    """An edge runtime does not phone home: ONNX Runtime's telemetry events off, for the whole process."""
    off = getattr(ort, "disable_telemetry_events", None)
    if off is not None:
        off()


_disable_telemetry()


class Provider(str, Enum):
    TENSORRT = "tensorrt"
    CUDA = "cuda"
    CPU = "cpu"

    @property
    def ort_name(self) -> str:
        return _ORT_NAMES[self]


_ORT_NAMES = {
    Provider.TENSORRT: "TensorrtExecutionProvider",
    Provider.CUDA: "CUDAExecutionProvider",
    Provider.CPU: "CPUExecutionProvider",
}
_BY_ORT_NAME = {v: k for k, v in _ORT_NAMES.items()}
AUTO_CHAIN = (Provider.TENSORRT, Provider.CUDA, Provider.CPU)

# Which precision suits which provider, best first. int8 in ORT's CPU operators (static int8-static-cpu,
# batch-invariant, as fast as dynamic; then int8-dynamic) runs only on CPU kernels (under CUDA it falls
# back to CPU op by op), fp16 is slow on CPU, and static QDQ int8 is what TensorRT builds int8 engines from.
_PREFERENCE = {
    Provider.CPU: (
        Precision.INT8_STATIC_CPU,
        Precision.INT8_DYNAMIC,
        Precision.FP32,
        Precision.INT8_STATIC,
        Precision.FP16,
    ),
    Provider.CUDA: (
        Precision.FP16,
        Precision.FP32,
        Precision.INT8_STATIC,
        Precision.INT8_STATIC_CPU,
        Precision.INT8_DYNAMIC,
    ),
    Provider.TENSORRT: (
        Precision.INT8_STATIC,
        Precision.FP16,
        Precision.FP32,
        Precision.INT8_STATIC_CPU,
        Precision.INT8_DYNAMIC,
    ),
}


def precision_preference(provider: Provider) -> tuple[Precision, ...]:
    return _PREFERENCE[provider]


class GraphOptimization(str, Enum):
    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"

    @property
    def ort_level(self) -> ort.GraphOptimizationLevel:
        return {
            GraphOptimization.DISABLE: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            GraphOptimization.BASIC: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            GraphOptimization.EXTENDED: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            GraphOptimization.ALL: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self]


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """ONNX Runtime session options shared by every session of an engine.

    ``intra_op_threads``/``inter_op_threads``: 0 lets ONNX Runtime choose (one per physical core).
    ``spinning``: whether idle worker threads busy-wait for the next op (ORT's default is on; off
    here, because an embedded runtime should not burn cores between requests -- turn it on for a
    dedicated latency server). ``trt_*``: TensorRT engine cache folder, fp16 and int8 (static QDQ
    graphs) flags, and the optimization profiles of the token inputs ``trt_profile_inputs``
    (:mod:`mtst.runtime.trt`).
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    spinning: bool = False
    graph_optimization: GraphOptimization = GraphOptimization.ALL
    trt_cache_dir: Path | None = None
    trt_fp16: bool = True
    trt_int8: bool = False
    trt_profiles: tuple[ShapeProfile, ...] = ()
    trt_profile_inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("intra_op_threads", "inter_op_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(
                    f"{name}: expected an integer >= 0 (0 = ONNX Runtime's choice), got {value!r}"
                )
        optimization = parse_enum(GraphOptimization, self.graph_optimization, "graph_optimization")
        object.__setattr__(self, "graph_optimization", optimization)
        if self.trt_cache_dir is not None:
            object.__setattr__(self, "trt_cache_dir", Path(self.trt_cache_dir))

    def session_options(self) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.intra_op_threads
        so.inter_op_num_threads = self.inter_op_threads
        so.graph_optimization_level = self.graph_optimization.ort_level
        spin = "1" if self.spinning else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        return so

    def provider_options(self, provider: Provider) -> dict[str, str]:
        if provider is Provider.TENSORRT:
            opts = {"trt_fp16_enable": "True" if self.trt_fp16 else "False"}
            if self.trt_int8:  # QDQ graphs: TensorRT takes the scales from the graph, no calibration
                opts["trt_int8_enable"] = "True"
            if self.trt_cache_dir is not None:
                opts["trt_engine_cache_enable"] = "True"
                opts["trt_engine_cache_path"] = str(self.trt_cache_dir)
                opts["trt_timing_cache_enable"] = "True"
                opts["trt_timing_cache_path"] = str(self.trt_cache_dir)
            opts.update(profile_options(self.trt_profiles, self.trt_profile_inputs))
            return opts
        return {}


@dataclass(frozen=True, slots=True)
class ProviderPlan:
    """The chain handed to ONNX Runtime, and which of its providers must really be active."""

    chain: tuple[Provider, ...]  # best first, CPU last
    required: tuple[Provider, ...]
    allow_fallback: bool
    dropped: tuple[str, ...] = ()  # "cuda: reason" for providers left out before creating the session

    @property
    def primary(self) -> Provider:
        return self.chain[0]


def _parse(name: Any, i: int) -> Provider:
    if isinstance(name, Provider):
        return name
    if not isinstance(name, str):
        raise ConfigError(f"providers[{i}]: expected a provider name, got {name!r}")
    if name in _BY_ORT_NAME:
        return _BY_ORT_NAME[name]
    hint = " (or 'auto', or an ONNX Runtime name such as 'CUDAExecutionProvider')"
    return parse_enum(Provider, name.strip().lower(), f"providers[{i}]", hint=hint)


def resolve_providers(
    providers: str | Sequence[str | Provider] = "auto", *, allow_fallback: bool = False
) -> ProviderPlan:
    """Turn a user chain (``"auto"``, ``"cuda"``, ``["tensorrt", "cuda", "cpu"]``) into a ProviderPlan.

    Raises ProviderUnavailableError when a required provider is not in this ONNX Runtime build.
    """
    available = set(ort.get_available_providers())
    if isinstance(providers, str) and providers.strip().lower() == "auto":
        auto = tuple(p for p in AUTO_CHAIN if p.ort_name in available)
        return ProviderPlan(chain=auto, required=(Provider.CPU,), allow_fallback=True)
    if isinstance(providers, (str, Provider)):
        names: list[Any] = [providers]
    elif isinstance(providers, (list, tuple)):
        names = list(providers)
    else:
        raise ConfigError(
            f"providers: expected 'auto', a provider name or a list of them (tensorrt, cuda, cpu), "
            f"got {providers!r}"
        )
    if not names:
        raise ConfigError("providers: empty list; name at least one of tensorrt, cuda, cpu (or 'auto')")
    wanted: list[Provider] = []
    for i, name in enumerate(names):
        p = _parse(name, i)
        if p not in wanted:
            wanted.append(p)
    chain: list[Provider] = []
    dropped: list[str] = []
    for p in wanted:
        if p.ort_name in available:
            chain.append(p)
            continue
        reason = (
            f"{p.value} ({p.ort_name}) is not available in this onnxruntime build "
            f"{ort.__version__} (available: {sorted(available)})"
        )
        if not allow_fallback:
            hint = " install the GPU build (pip install 'mtst[gpu]')" if p is not Provider.CPU else ""
            raise ProviderUnavailableError(
                f"provider {reason};{hint} or pass allow_fallback=True to run on what is available"
            )
        dropped.append(reason)
        logger.warning("provider %s; falling back (allow_fallback=True)", reason)
    if Provider.CPU not in chain:  # ORT appends CPU anyway; say so in the plan
        chain.append(Provider.CPU)
    required = tuple(p for p in wanted if p.ort_name in available)
    return ProviderPlan(
        chain=tuple(chain), required=required, allow_fallback=allow_fallback, dropped=tuple(dropped)
    )


def check_active(session: ort.InferenceSession, plan: ProviderPlan, *, what: str) -> tuple[Provider, ...]:
    """Providers the session really uses; raises if a required one silently fell away."""
    active = tuple(_BY_ORT_NAME[n] for n in session.get_providers() if n in _BY_ORT_NAME)
    missing = [p for p in plan.required if p not in active]
    if missing:
        reason = (
            f"{what}: provider(s) {[p.value for p in missing]} were requested but ONNX Runtime runs "
            f"{[p.value for p in active]} (the provider failed to load -- see ONNX Runtime's log above "
            f"for the library it could not open)"
        )
        if not plan.allow_fallback:
            raise ProviderUnavailableError(reason + "; pass allow_fallback=True to accept the fallback")
        logger.warning("%s; continuing (allow_fallback=True)", reason)
    else:
        lost = [p.value for p in plan.chain if p not in active]
        if lost:
            logger.warning(
                "%s: provider(s) %s could not be used; running on %s", what, lost, [p.value for p in active]
            )
    return active


# ONNX Runtime optimizers left out of sessions whose first provider is the CPU. SkipLayerNormFusion
# folds "Add (+ bias Add) + LayerNormalization" into SkipLayerNormalization, whose CPU kernel is slow
# in onnxruntime 1.32: on all-MiniLM-L6-v2 int8 the 12 SkipLayerNormalization nodes took 27% of a
# one-sentence run (about 27 us each on 17x384 values), and the unfused graph ran 12-16% faster at
# batch 1 and 29% faster over the benchmark corpus (fp32: 17%). Exports no longer fuse it either
# (mtst.export.fusion); on CUDA the fusion stays on.
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def disabled_optimizers(plan: ProviderPlan) -> list[str]:
    """ONNX Runtime graph optimizers a session for ``plan`` runs without."""
    return list(CPU_DISABLED_OPTIMIZERS) if plan.primary is Provider.CPU else []


def create_session(
    model: Path | bytes,
    plan: ProviderPlan,
    settings: SessionSettings,
    *,
    what: str | None = None,
    external_data: Mapping[str, bytes] | None = None,
) -> tuple[ort.InferenceSession, tuple[Provider, ...]]:
    """An InferenceSession on ``model`` (a graph file, or its bytes) with the plan's chain; returns it
    with its active providers.

    ``external_data``: the contents of the files the graph keeps tensors in, by the location the graph
    names them with (a graph given as bytes then opens no file at all).
    """
    providers = [(p.ort_name, settings.provider_options(p)) for p in plan.chain]
    options = settings.session_options()
    if external_data:
        names = list(external_data)
        buffers = [external_data[n] for n in names]
        options.add_external_initializers_from_files_in_memory(names, buffers, [len(b) for b in buffers])
    session = ort.InferenceSession(
        model if isinstance(model, bytes) else str(model),
        sess_options=options,
        providers=providers,
        disabled_optimizers=disabled_optimizers(plan) or None,
    )
    return session, check_active(
        session, plan, what=what or str(model if not isinstance(model, bytes) else "graph")
    )
