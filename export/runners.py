"""Run the torch reference and an exported bundle variant on the same numpy inputs.

Both runners take a batch ``{input name: int64 array (B, T)}`` and return ``{output name: float32
array}`` with the bundle's output names (``embedding`` and one per head), whatever the graph layout.
Parity and the accuracy guard compare the two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtst.runtime.manifest import Layout, Variant
from mtst.runtime.providers import Provider
from mtst.runtime.runners import EMBEDDING, TOKEN_STATES, SessionOpener, SplitRunner, open_runner

__all__ = ["OrtRunner", "TorchRunner", "session_options"]


def session_options(threads: int = 0) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    # Export shares the machine with other work: do not let idle workers spin.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


class TorchRunner:
    """The torch fp32 model in eval mode: the reference every exported graph is judged against."""

    def __init__(self, model: Any) -> None:
        self.model = model.eval()
        self.inputs = tuple(model.input_names)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        if self.model.training:  # pragma: no cover - a bug guard, see DESIGN.md known traps
            raise RuntimeError("torch reference is in training mode")
        with torch.inference_mode():
            feeds = {k: torch.from_numpy(np.ascontiguousarray(batch[k])) for k in self.inputs}
            out = self.model(**feeds)
        result = {EMBEDDING: out.embedding.float().numpy()}
        result.update({k: v.float().numpy() for k, v in out.logits.items()})
        result[TOKEN_STATES] = out.token_states.float().numpy()
        return result


def _cpu_opener(threads: int) -> SessionOpener:
    import onnxruntime as ort

    so = session_options(threads)

    def open_session(role: str, path: Path) -> Any:
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return session, (Provider.CPU,)

    return open_session


class OrtRunner:
    """One variant of a bundle directory on ONNX Runtime's CPU provider (single or split layout).

    The graphs run on the runtime's layout runner (``mtst.runtime.runners``), with export's session
    options (:func:`session_options`).
    """

    def __init__(
        self, bundle_dir: Path, variant: Variant, inputs: tuple[str, ...], *, threads: int = 0
    ) -> None:
        self.variant = variant
        self.inputs = inputs
        self.runner = open_runner(Path(bundle_dir), variant, _cpu_opener(threads))
        self._outputs = [o for g in self.runner.graphs for o in g.outputs]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.variant.layout is Layout.HEADS:
            raise ValueError("a heads-only variant runs on embeddings: use run_heads()")
        feeds = {k: np.ascontiguousarray(batch[k], dtype=np.int64) for k in self.inputs}
        return dict(zip(self._outputs, self.runner.run(feeds, self._outputs), strict=True))

    def run_heads(self, states: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Head graphs on precomputed ``embedding`` (and ``token_states``)."""
        runner = self.runner
        if not isinstance(runner, SplitRunner):
            return {}
        feeds = {EMBEDDING: states[EMBEDDING].astype(np.float32)}
        outputs = list(runner.heads.outputs)
        if runner.token_heads is not None:
            feeds[TOKEN_STATES] = states[TOKEN_STATES].astype(np.float32)
            outputs += runner.token_heads.outputs
        return dict(zip(outputs, runner.run(feeds, outputs), strict=True))
