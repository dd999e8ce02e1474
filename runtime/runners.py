"""One runner per graph layout: a variant's ONNX Runtime sessions behind one ``run(feeds, outputs)``.

- :class:`SingleRunner` (layout ``single``): ``model.onnx`` answers everything in one run.
- :class:`SplitRunner` (layouts ``split`` and ``heads``): ``encoder.onnx`` gives ``embedding`` (and
  ``token_states``), ``heads.onnx`` maps ``embedding`` to the sentence heads, ``token_heads.onnx``
  maps ``token_states`` to the token heads. Feeds may hold ``embedding``/``token_states`` themselves
  (cached embeddings, a heads-only variant), and then the encoder does not run.

``run(feeds, outputs)`` returns the arrays named in ``outputs``, in that order, and runs only the
graphs (and graph outputs) they need. The engine and export's ``OrtRunner`` both run bundles this
way; each opens the sessions with its own options through ``open_session(role, path)``.

IO binding (``io_binding=True``, or ``"auto"``: on when the graphs run on a GPU) runs every graph through
an ONNX Runtime ``IOBinding``: inputs are copied to the graph's device once, outputs are allocated
there, and between the graphs of a split layout the ``embedding``/``token_states`` stay on the device
(the heads read them where the encoder wrote them); only the outputs asked for come back to the host.
``run_device(feeds, outputs)`` leaves the outputs asked for on the device (``OrtValue``). The same path
runs on CPU (CPU ``OrtValue``s), where it gives exactly the answers of a plain ``run``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeAlias

import numpy as np
import onnxruntime as ort

from mtst.errors import BundleError, ConfigError
from mtst.runtime.manifest import MANIFEST_NAME, HeadInfo, HeadKind, Layout, Variant
from mtst.runtime.providers import Provider

__all__ = [
    "EMBEDDING",
    "TOKEN_STATES",
    "Graph",
    "IoBinding",
    "Runner",
    "SessionOpener",
    "SingleRunner",
    "SplitRunner",
    "check_encoder",
    "check_heads",
    "graph_device",
    "open_graph",
    "open_heads",
    "open_runner",
]

EMBEDDING = "embedding"
TOKEN_STATES = "token_states"

# (role, graph path) -> an InferenceSession and the providers it really runs on
SessionOpener: TypeAlias = Callable[[str, Path], tuple[ort.InferenceSession, tuple[Provider, ...]]]
Feeds: TypeAlias = Mapping[str, np.ndarray]
# feeds that may already sit on a graph's device (the encoder's outputs on their way to the heads)
Values: TypeAlias = Mapping[str, "np.ndarray | ort.OrtValue"]
IoBinding: TypeAlias = "bool | str"  # True, False or "auto" (on for graphs on a GPU)

_GPU_PROVIDERS = (Provider.CUDA, Provider.TENSORRT)


def graph_device(providers: Sequence[Provider]) -> str:
    """Where a session keeps its tensors: ``"cuda"`` when its first provider is a GPU one, else ``"cpu"``."""
    return "cuda" if providers and providers[0] in _GPU_PROVIDERS else "cpu"


def _binds(io_binding: IoBinding, device: str) -> bool:
    if io_binding == "auto":
        return device != "cpu"
    if isinstance(io_binding, bool):
        return io_binding
    raise ConfigError(f"io_binding: expected True, False or 'auto', got {io_binding!r}")


def _host(value: np.ndarray | ort.OrtValue) -> np.ndarray:
    return value.numpy() if isinstance(value, ort.OrtValue) else value


_ORT_STATE = ort.capi.onnxruntime_pybind11_state  # type: ignore[attr-defined]
# what ONNX Runtime raises for a graph it will not load (each its own class, none a common base but Exception)
_ORT_LOAD_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(_ORT_STATE, n)
    for n in (
        "Fail",
        "InvalidArgument",
        "InvalidGraph",
        "NoSuchFile",
        "NoModel",
        "NotFound",
        "NotImplemented",
        "RuntimeException",
    )
    if hasattr(_ORT_STATE, n)
)


@dataclass(frozen=True, slots=True)
class Graph:
    """One session with its input and output names (graph order) and the providers it runs on."""

    session: ort.InferenceSession
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    path: Path
    providers: tuple[Provider, ...]
    device: str = "cpu"  # where the session keeps tensors (graph_device)
    bind: bool = False  # run through IO binding (run_bound) rather than session.run
    device_id: int = 0

    def run(self, feeds: Values, outputs: Sequence[str]) -> list[np.ndarray]:
        if self.bind:
            return [_host(v) for v in self.run_bound(feeds, outputs)]
        return self.session.run(outputs, {k: _host(feeds[k]) for k in self.inputs})  # type: ignore[no-any-return]

    def run_bound(self, feeds: Values, outputs: Sequence[str]) -> list[ort.OrtValue]:
        """One run through an IOBinding: host inputs copied to the device once, OrtValues already there
        bound as they are, outputs allocated on the device and returned there."""
        binding = self.session.io_binding()
        for name in self.inputs:
            value = feeds[name]
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            elif self.device == "cpu":  # binds the array's memory: it must be one C-contiguous block
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            else:
                binding.bind_ortvalue_input(name, self.to_device(value))
        for name in outputs:
            binding.bind_output(name, self.device, self.device_id)
        self.session.run_with_iobinding(binding)
        return list(binding.get_outputs())

    def to_device(self, value: np.ndarray | ort.OrtValue) -> ort.OrtValue:
        if isinstance(value, ort.OrtValue):
            return value
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), self.device, self.device_id)


def open_graph(
    root: Path, role: str, name: str, open_session: SessionOpener, *, io_binding: IoBinding = False
) -> Graph:
    """The graph file ``name`` of the bundle at ``root``; BundleError when ONNX Runtime refuses it.

    ``io_binding``: run it through IO binding (True), not (False), or when it runs on a GPU ("auto").
    """
    path = root / name
    try:
        session, active = open_session(role, path)
    except _ORT_STATE.InvalidProtobuf as exc:
        raise BundleError(f"{root}: {name}: not a valid ONNX model ({exc})") from None
    except _ORT_LOAD_ERRORS as exc:
        raise BundleError(f"{root}: {name}: ONNX Runtime cannot load it ({exc})") from None
    device = graph_device(active)
    return Graph(
        session=session,
        inputs=tuple(i.name for i in session.get_inputs()),
        outputs=tuple(o.name for o in session.get_outputs()),
        path=path,
        providers=active,
        device=device,
        bind=_binds(io_binding, device),
    )


@dataclass(frozen=True, slots=True)
class SingleRunner:
    """Layout ``single``: one graph from token inputs to the embedding and every head."""

    model: Graph
    takes_embeddings: ClassVar[bool] = False  # the heads sit inside model.onnx

    @property
    def graphs(self) -> tuple[Graph, ...]:
        return (self.model,)

    @property
    def encoder(self) -> Graph:
        return self.model

    def run(self, feeds: Feeds, outputs: Sequence[str]) -> list[np.ndarray]:
        return self.model.run(feeds, outputs)

    def run_device(self, feeds: Feeds, outputs: Sequence[str]) -> list[ort.OrtValue]:
        """Like :meth:`run`, the outputs left on the graph's device."""
        return self.model.run_bound(feeds, outputs)


# one step of a split run: a graph and the outputs asked of it
_Step: TypeAlias = tuple[Graph, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class SplitRunner:
    """Layouts ``split`` (encoder + heads graphs) and ``heads`` (no encoder: runs on embeddings)."""

    encoder: Graph | None
    heads: Graph
    token_heads: Graph | None
    # by (outputs, embedding fed, token states fed), planned on first use: the steps, or the one
    # graph that answers every output asked, in order (the heads on embeddings)
    _plans: dict[tuple[tuple[str, ...], bool, bool], Graph | tuple[_Step, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )
    takes_embeddings: ClassVar[bool] = True  # heads.onnx runs on embeddings alone

    @property
    def graphs(self) -> tuple[Graph, ...]:
        return tuple(g for g in (self.encoder, self.heads, self.token_heads) if g is not None)

    def with_heads(self, heads: Graph, token_heads: Graph | None) -> SplitRunner:
        """The same encoder with other heads graphs (``Engine.swap_heads``)."""
        return SplitRunner(self.encoder, heads, token_heads)

    def _planned(self, feeds: Values, outputs: Sequence[str]) -> Graph | tuple[_Step, ...]:
        key = (tuple(outputs), EMBEDDING in feeds, TOKEN_STATES in feeds)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(*key)
        return plan

    def run(self, feeds: Feeds, outputs: Sequence[str]) -> list[np.ndarray]:
        plan = self._planned(feeds, outputs)
        if isinstance(plan, Graph):
            if not plan.bind and len(feeds) == len(plan.inputs):  # the feeds are its inputs: as they are
                return plan.session.run(outputs, feeds)  # type: ignore[no-any-return]
            return plan.run(feeds, outputs)
        values = self._run_steps(plan, feeds, device=False)
        return [_host(values[o]) for o in outputs]

    def run_device(self, feeds: Feeds, outputs: Sequence[str]) -> list[ort.OrtValue]:
        """Like :meth:`run`, the outputs left on the device of the graph that computed them."""
        plan = self._planned(feeds, outputs)
        if isinstance(plan, Graph):
            return plan.run_bound(feeds, outputs)
        values = self._run_steps(plan, feeds, device=True)
        first = plan[0][0]
        return [first.to_device(values[o]) for o in outputs]

    @staticmethod
    def _run_steps(plan: tuple[_Step, ...], feeds: Values, *, device: bool) -> dict[str, Any]:
        """Every step of ``plan``; a bound graph's outputs (or all, with ``device``) stay OrtValues."""
        values: dict[str, Any] = dict(feeds)
        for graph, names in plan:
            got = graph.run_bound(values, names) if device or graph.bind else graph.run(values, names)
            values.update(zip(names, got, strict=True))
        return values

    def _plan(self, outputs: tuple[str, ...], have_emb: bool, have_states: bool) -> Graph | tuple[_Step, ...]:
        token_outputs = self.token_heads.outputs if self.token_heads is not None else ()
        sent = [o for o in outputs if o in self.heads.outputs]
        token = [o for o in outputs if o in token_outputs]
        needed = [o for o in outputs if o not in sent and o not in token]
        if sent and EMBEDDING not in needed:
            needed.append(EMBEDDING)
        if token and TOKEN_STATES not in needed:
            needed.append(TOKEN_STATES)
        fed = {EMBEDDING} if have_emb else set()
        fed |= {TOKEN_STATES} if have_states else set()
        encoder = [o for o in needed if o not in fed]
        steps: list[_Step] = []
        if encoder:
            if self.encoder is None or not set(encoder) <= set(self.encoder.outputs):
                have = [*(self.encoder.outputs if self.encoder else ()), *self.heads.outputs, *token_outputs]
                raise ValueError(f"outputs {encoder} are not outputs of this variant's graphs ({have})")
            steps.append((self.encoder, tuple(encoder)))
        if sent:
            steps.append((self.heads, tuple(sent)))
        if token:
            assert self.token_heads is not None
            steps.append((self.token_heads, tuple(token)))
        if len(steps) == 1 and steps[0][1] == outputs:
            return steps[0][0]
        return tuple(steps)


Runner: TypeAlias = SingleRunner | SplitRunner


def open_heads(
    root: Path,
    variant: Variant,
    open_session: SessionOpener,
    *,
    token_heads: bool = True,
    io_binding: IoBinding = False,
) -> tuple[Graph, Graph | None]:
    """The heads graphs of a split or heads-only variant (token heads when asked for and present)."""
    heads = open_graph(root, "heads", variant.graphs["heads"], open_session, io_binding=io_binding)
    name = variant.graphs.get("token_heads")
    token = (
        open_graph(root, "token_heads", name, open_session, io_binding=io_binding)
        if token_heads and name
        else None
    )
    return heads, token


def open_runner(
    root: Path,
    variant: Variant,
    open_session: SessionOpener,
    *,
    token_heads: bool = True,
    io_binding: IoBinding = False,
) -> Runner:
    """The runner of ``variant`` in the bundle folder ``root``: every graph of the variant, opened.

    ``token_heads=False`` leaves ``token_heads.onnx`` closed (a bundle whose manifest has no token head).
    ``io_binding``: see the module's docstring.
    """
    _binds(io_binding, "cpu")  # a bad value fails here, before any session opens
    if variant.layout is Layout.SINGLE:
        model = open_graph(root, "model", variant.graphs["model"], open_session, io_binding=io_binding)
        return SingleRunner(model)
    name = variant.graphs.get("encoder")
    encoder = open_graph(root, "encoder", name, open_session, io_binding=io_binding) if name else None
    heads = open_heads(root, variant, open_session, token_heads=token_heads, io_binding=io_binding)
    return SplitRunner(encoder, *heads)


def _require_outputs(graph: Graph, names: Sequence[str], root: Path) -> None:
    missing = sorted(set(names) - set(graph.outputs))
    if missing:
        raise BundleError(
            f"{root}: {graph.path.name}: outputs {missing} named in {MANIFEST_NAME} are not graph outputs "
            f"(graph has {sorted(graph.outputs)})"
        )


def _require_input(graph: Graph, name: str, root: Path) -> None:
    if name not in graph.inputs:
        raise BundleError(
            f"{root}: {graph.path.name}: expected input {name!r}, graph takes {list(graph.inputs)}"
        )


def check_encoder(runner: Runner, inputs: Sequence[str], root: Path) -> None:
    """The encoder (or single graph) takes only the manifest's inputs and gives the embedding."""
    encoder = runner.encoder
    if encoder is None:
        return
    extra = sorted(set(encoder.inputs) - set(inputs))
    if extra:
        raise BundleError(
            f"{root}: {encoder.path.name}: graph inputs {extra} are not in {MANIFEST_NAME} inputs {list(inputs)}"
        )
    _require_outputs(encoder, [EMBEDDING], root)


def check_heads(runner: Runner, variant: Variant, heads: Sequence[HeadInfo], root: Path) -> None:
    """The graphs of ``variant`` answer every label head of ``heads`` (the manifest's), from the inputs
    the heads need."""
    sentence = [h.output for h in heads if h.kind is HeadKind.SENTENCE]
    token = [h.output for h in heads if h.kind is HeadKind.TOKEN]
    if isinstance(runner, SingleRunner):
        _require_outputs(runner.model, [*sentence, *token], root)
        return
    _require_input(runner.heads, EMBEDDING, root)
    _require_outputs(runner.heads, sentence, root)
    if not token:
        return
    if runner.token_heads is None:
        names = [h.name for h in heads if h.kind is HeadKind.TOKEN]
        raise BundleError(
            f"{root}: {MANIFEST_NAME}: token heads {names} but variant {variant.key} has no token_heads graph"
        )
    _require_input(runner.token_heads, TOKEN_STATES, root)
    _require_outputs(runner.token_heads, token, root)
    if runner.encoder is not None:
        _require_outputs(runner.encoder, [TOKEN_STATES], root)
