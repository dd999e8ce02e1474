"""Helpers of the Triton tests: tritonclient's config schema, the ensemble walked with onnxruntime,
and the comparison of served answers with the local Engine's."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mtst.runtime import Engine, Prediction, SentenceLabel, TokenEntities
from mtst.runtime.results import decode_tokens

LOGIT_ATOL = 1e-4


def need(module: str) -> Any:
    """Import ``module``; in CI a missing one fails the test, elsewhere it skips it."""
    try:
        return pytest.importorskip(module)
    except pytest.skip.Exception:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is not installed (CI installs it through mtst[dev] / .ci/run)")
        raise


def parse_config(path: Path) -> Any:
    """``config.pbtxt`` parsed with the ModelConfig schema that tritonclient carries (errors raise)."""
    text_format = need("google.protobuf.text_format")
    model_config_pb2 = need("tritonclient.grpc.model_config_pb2")
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def run_ensemble(
    repo: Path, name: str, texts: Sequence[str], tokenizer_outputs: Any
) -> dict[str, np.ndarray]:
    """The ensemble ``<name>_ensemble`` step by step: ``tokenizer_outputs(texts)`` stands in for the
    tokenizer step (in-process or a real server's answer), then ``<name>_onnx/1/model.onnx`` runs on
    onnxruntime with the inputs its step maps to it. Returns every tensor of the ensemble by name
    (its outputs and the tokenizer step's outputs)."""
    import onnxruntime as ort

    ensemble = parse_config(repo / f"{name}_ensemble" / "config.pbtxt")
    steps = list(ensemble.ensemble_scheduling.step)
    assert [s.model_name for s in steps] == [f"{name}_tokenizer", f"{name}_onnx"]
    tensors: dict[str, np.ndarray] = {}
    tok = tokenizer_outputs(texts)
    for key, value in steps[0].output_map.items():
        tensors[value] = tok[key]
    session = ort.InferenceSession(
        str(repo / f"{name}_onnx" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    feeds = {key: tensors[value] for key, value in steps[1].input_map.items()}
    names = list(steps[1].output_map)
    for key, arr in zip(names, session.run(names, feeds), strict=True):
        tensors[steps[1].output_map[key]] = arr
    missing = [o.name for o in ensemble.output if o.name not in tensors]
    assert not missing, f"ensemble outputs {missing} are produced by no step"
    return tensors


def assert_ensemble_matches(
    engine: Engine, texts: Sequence[str], outputs: Mapping[str, np.ndarray], *, atol: float = 1e-5
) -> None:
    """Ensemble outputs equal the engine's: embeddings within ``atol``, the same entity spans decoded
    from the logits, and logits within ``LOGIT_ATOL`` (they are not normalized: values up to ~10, and
    another padding of the batch moves them by ~1e-5)."""
    local = engine.predict(list(texts), return_embedding=True, return_logits=True)
    np.testing.assert_allclose(outputs["embedding"], np.stack([p.embedding for p in local]), atol=atol)
    lengths = outputs["attention_mask"].sum(axis=1)
    for name, head in engine.heads.items():
        lg = outputs[head.output]
        for i, p in enumerate(local):
            want = p.heads[name]
            if isinstance(want, SentenceLabel):
                np.testing.assert_allclose(lg[i], p.logits[name], atol=LOGIT_ATOL)  # type: ignore[index]
                continue
            k = int(lengths[i])
            np.testing.assert_allclose(lg[i, :k], p.logits[name], atol=LOGIT_ATOL)  # type: ignore[index]
            word_ids = [None if w < 0 else int(w) for w in outputs["word_ids"][i, :k]]
            offsets = [tuple(int(x) for x in o) for o in outputs["offsets"][i, :k]]
            got = decode_tokens(texts[i], lg[i, :k], word_ids, offsets, head.labels)  # type: ignore[arg-type]
            assert _spans(got) == _spans(want), (texts[i], got, want)


def _spans(r: Any) -> list[tuple[str, str, int, int]]:
    assert isinstance(r, TokenEntities)
    return [(e.text, e.label, e.start, e.end) for e in r.entities]


def assert_served_equal(
    engine_answers: Sequence[Prediction], served: Mapping[str, np.ndarray], *, atol: float = 1e-5
) -> None:
    """Outputs of the text model for a run of texts equal the engine's predictions of the same texts:
    labels and entity spans exactly, scores and embeddings within ``atol``."""
    n = len(engine_answers)
    if "embedding" in served:
        np.testing.assert_allclose(
            served["embedding"], np.stack([p.embedding for p in engine_answers]), atol=atol
        )
    if "truncated" in served:
        assert served["truncated"].reshape(n).tolist() == [p.truncated for p in engine_answers]
    for name in engine_answers[0].heads if n else ():
        results = [p.heads[name] for p in engine_answers]
        if f"{name}_label" in served:
            labels = [x.decode("utf-8") for x in served[f"{name}_label"].reshape(n).tolist()]
            assert labels == [r.label for r in results]  # type: ignore[union-attr]
        if f"{name}_score" in served:
            scores = np.array([r.score for r in results], dtype=np.float32)  # type: ignore[union-attr]
            np.testing.assert_allclose(served[f"{name}_score"].reshape(n), scores, atol=atol)
        if f"{name}_scores" in served:
            table = np.array([list(r.scores.values()) for r in results], dtype=np.float32)  # type: ignore[union-attr]
            np.testing.assert_allclose(served[f"{name}_scores"], table, atol=atol)
        if f"{name}_entities" in served:
            got = [json.loads(x) for x in served[f"{name}_entities"].reshape(n).tolist()]
            for g, r in zip(got, results, strict=True):
                assert [(e["text"], e["label"], e["start"], e["end"]) for e in g] == _spans(r)
                np.testing.assert_allclose(
                    [e["score"] for e in g],
                    [e.score for e in r.entities],  # type: ignore[union-attr]
                    atol=atol,
                )
