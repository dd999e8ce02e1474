"""One runner per graph layout: a variant's ONNX Runtime sessions behind one ``run(feeds, outputs)``.

- :class:`SingleRunner` (layout ``single``): ``model.onnx`` answers everything in one run.
- :class:`SplitRunner` (layouts ``split`` and ``heads``): ``encoder.onnx`` gives ``embedding`` (and
  ``token_states``), ``heads.onnx`` maps ``embedding`` to the sentence heads, ``token_heads.onnx``
  maps ``token_states`` to the token heads. Feeds may hold ``embedding``/``token_states`` themselves
  (cached embeddings, a heads-only variant), and then the encoder does not run.

``run(feeds, outputs)`` returns the arrays named in ``outputs``, in that order, and runs only the
graphs (and graph outputs) they need. The engine and export's ``OrtRunner`` both run bundles this
way; each opens the sessions with its own options through ``open_session(role, path)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, TypeAlias

import numpy as np
import onnxruntime as ort

from mtst.errors import BundleError
from mtst.runtime.manifest import MANIFEST_NAME, HeadInfo, HeadKind, Layout, Variant
from mtst.runtime.providers import Provider

__all__ = [
    "EMBEDDING",
    "TOKEN_STATES",
    "Graph",
    "Runner",
    "SessionOpener",
    "SingleRunner",
    "SplitRunner",
    "check_encoder",
    "check_heads",
    "open_graph",
    "open_heads",
    "open_runner",
]

EMBEDDING = "embedding"
TOKEN_STATES = "token_states"

# (role, graph path) -> an InferenceSession and the providers it really runs on
SessionOpener: TypeAlias = Callable[[str, Path], tuple[ort.InferenceSession, tuple[Provider, ...]]]
Feeds: TypeAlias = Mapping[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class Graph:
    """One session with its input and output names (graph order) and the providers it runs on."""

    session: ort.InferenceSession
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    path: Path
    providers: tuple[Provider, ...]

    def run(self, feeds: Feeds, outputs: Sequence[str]) -> list[np.ndarray]:
        return self.session.run(outputs, {k: feeds[k] for k in self.inputs})  # type: ignore[no-any-return]


def open_graph(root: Path, role: str, name: str, open_session: SessionOpener) -> Graph:
    """The graph file ``name`` of the bundle at ``root``; BundleError when ONNX Runtime refuses it."""
    path = root / name
    try:
        session, active = open_session(role, path)
    except ort.capi.onnxruntime_pybind11_state.Fail as exc:  # type: ignore[attr-defined]
        raise BundleError(f"{root}: {name}: ONNX Runtime cannot load it ({exc})") from None
    except ort.capi.onnxruntime_pybind11_state.InvalidProtobuf as exc:  # type: ignore[attr-defined]
        raise BundleError(f"{root}: {name}: not a valid ONNX model ({exc})") from None
    return Graph(
        session=session,
        inputs=tuple(i.name for i in session.get_inputs()),
        outputs=tuple(o.name for o in session.get_outputs()),
        path=path,
        providers=active,
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

    def run(self, feeds: Feeds, outputs: Sequence[str]) -> list[np.ndarray]:
        key = (tuple(outputs), EMBEDDING in feeds, TOKEN_STATES in feeds)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(*key)
        if isinstance(plan, Graph):
            if len(feeds) == len(plan.inputs):  # the feeds are its inputs: hand them over as they are
                return plan.session.run(outputs, feeds)  # type: ignore[no-any-return]
            return plan.run(feeds, outputs)
        values = dict(feeds)
        for graph, names in plan:
            values.update(zip(names, graph.run(values, names), strict=True))
        return [values[o] for o in outputs]

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
    root: Path, variant: Variant, open_session: SessionOpener, *, token_heads: bool = True
) -> tuple[Graph, Graph | None]:
    """The heads graphs of a split or heads-only variant (token heads when asked for and present)."""
    heads = open_graph(root, "heads", variant.graphs["heads"], open_session)
    name = variant.graphs.get("token_heads")
    token = open_graph(root, "token_heads", name, open_session) if token_heads and name else None
    return heads, token


def open_runner(
    root: Path, variant: Variant, open_session: SessionOpener, *, token_heads: bool = True
) -> Runner:
    """The runner of ``variant`` in the bundle folder ``root``: every graph of the variant, opened.

    ``token_heads=False`` leaves ``token_heads.onnx`` closed (a bundle whose manifest has no token head).
    """
    if variant.layout is Layout.SINGLE:
        return SingleRunner(open_graph(root, "model", variant.graphs["model"], open_session))
    name = variant.graphs.get("encoder")
    encoder = open_graph(root, "encoder", name, open_session) if name else None
    return SplitRunner(encoder, *open_heads(root, variant, open_session, token_heads=token_heads))


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
