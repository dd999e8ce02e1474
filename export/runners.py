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

__all__ = ["OrtRunner", "TorchRunner", "session_options"]

EMBEDDING = "embedding"
TOKEN_STATES = "token_states"


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


class OrtRunner:
    """One variant of a bundle directory on ONNX Runtime's CPU provider (single or split layout)."""

    def __init__(
        self, bundle_dir: Path, variant: Variant, inputs: tuple[str, ...], *, threads: int = 0
    ) -> None:
        import onnxruntime as ort

        self.variant = variant
        self.inputs = inputs
        so = session_options(threads)
        self.sessions = {
            role: ort.InferenceSession(str(Path(bundle_dir) / name), so, providers=["CPUExecutionProvider"])
            for role, name in variant.graphs.items()
        }

    def _run(self, role: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess = self.sessions[role]
        names = [o.name for o in sess.get_outputs()]
        wanted = {i.name for i in sess.get_inputs()}
        return dict(zip(names, sess.run(names, {k: v for k, v in feeds.items() if k in wanted}), strict=True))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: np.ascontiguousarray(batch[k], dtype=np.int64) for k in self.inputs}
        if self.variant.layout is Layout.SINGLE:
            return self._run("model", feeds)
        if self.variant.layout is Layout.HEADS:
            raise ValueError("a heads-only variant runs on embeddings: use run_heads()")
        out = self._run("encoder", feeds)
        out.update(self.run_heads(out))
        return out

    def run_heads(self, states: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Head graphs on precomputed ``embedding`` (and ``token_states``)."""
        out: dict[str, np.ndarray] = {}
        if "heads" in self.sessions:
            out.update(self._run("heads", {EMBEDDING: states[EMBEDDING].astype(np.float32)}))
        if "token_heads" in self.sessions:
            out.update(self._run("token_heads", {TOKEN_STATES: states[TOKEN_STATES].astype(np.float32)}))
        return out
