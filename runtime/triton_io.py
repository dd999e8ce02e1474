"""What the Triton models of ``mtst-export --format triton`` do, without Triton's Python API.

The model files in a Triton repository (``<name>/1/model.py``, ``<name>_tokenizer/1/model.py``)
only move tensors between Triton's Python backend and the classes here, so everything a server
does with a request can be run and tested in-process, torch-free:

- :class:`TextModel` serves raw strings through an :class:`~mtst.runtime.Engine`: input ``text``
  (``TYPE_STRING``, dims ``[1]``), outputs per head (see :func:`text_model_outputs`). Only the
  outputs a request asks for are computed and returned: ``embedding`` costs a copy, a token head's
  entities cost decoding.
- :class:`TokenizeStep` is the tokenizer step of the ensemble: ``text`` in, the graph inputs of
  ``<name>_onnx`` out, plus ``word_ids`` and ``offsets`` so that a client can decode token heads.

Model settings come from ``config.pbtxt`` ``parameters`` (string values, see
:data:`TEXT_MODEL_PARAMETERS`); a bad value fails the model load with a message naming it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtst.errors import BundleError, ConfigError
from mtst.runtime.bundle import hash_file
from mtst.runtime.engine import Engine
from mtst.runtime.manifest import MANIFEST_NAME, HeadKind, Manifest
from mtst.runtime.results import Prediction, SentenceLabel, TokenEntities
from mtst.runtime.tokenize import TextTokenizer

__all__ = [
    "EMBEDDING",
    "TEXT",
    "TEXT_MODEL_PARAMETERS",
    "TRUNCATED",
    "Request",
    "TensorSpec",
    "TextModel",
    "TokenizeStep",
    "decode_texts",
    "requests_from_triton",
    "responses_to_triton",
    "text_model_outputs",
    "tokenizer_outputs",
]

TEXT = "text"
EMBEDDING = "embedding"
TRUNCATED = "truncated"
WORD_IDS = "word_ids"
OFFSETS = "offsets"

# parameters of the text model in config.pbtxt -> default ("" = the engine's own choice)
TEXT_MODEL_PARAMETERS: dict[str, str] = {
    "providers": "",  # "" = cpu for KIND_CPU instances, "cuda,cpu" for KIND_GPU
    "precision": "",
    "intra_op_threads": "0",
    "inter_op_threads": "0",
    "parallel_batches": "1",
    "batch_size": "32",
    "max_batch_tokens": "auto",  # or an integer, or "none"
    "min_entity_score": "0",
    "manifest_sha256": "",  # written by the exporter: manifest.json itself is pinned too
}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a Triton model: name, Triton data type, dims without the batch axis."""

    name: str
    data_type: str  # TYPE_STRING | TYPE_FP32 | TYPE_BOOL | TYPE_INT64
    dims: tuple[int, ...]
    head: str = ""  # the head an output belongs to ("" for embedding / truncated / tokenizer outputs)
    part: str = ""  # label | score | scores | entities


def text_model_outputs(manifest: Manifest) -> tuple[TensorSpec, ...]:
    """Outputs of the text model, in config order: ``embedding``, ``truncated``, then per head
    ``<head>_label`` / ``<head>_score`` / ``<head>_scores`` (sentence heads, scores in label order)
    or ``<head>_entities`` (token heads: one JSON array of entities per text)."""
    specs = [
        TensorSpec(EMBEDDING, "TYPE_FP32", (manifest.embedding_dim,)),
        TensorSpec(TRUNCATED, "TYPE_BOOL", (1,)),
    ]
    for h in manifest.heads:
        if h.kind is HeadKind.SENTENCE:
            specs += [
                TensorSpec(f"{h.name}_label", "TYPE_STRING", (1,), h.name, "label"),
                TensorSpec(f"{h.name}_score", "TYPE_FP32", (1,), h.name, "score"),
                TensorSpec(f"{h.name}_scores", "TYPE_FP32", (len(h.labels),), h.name, "scores"),
            ]
        elif h.kind is HeadKind.TOKEN:
            specs.append(TensorSpec(f"{h.name}_entities", "TYPE_STRING", (1,), h.name, "entities"))
    names = [s.name for s in specs]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise BundleError(
            f"{MANIFEST_NAME}: heads {[h.name for h in manifest.heads]} give the output names {clash} twice"
        )
    return tuple(specs)


def tokenizer_outputs(manifest: Manifest) -> tuple[TensorSpec, ...]:
    """Outputs of the tokenizer step: the graph inputs (int64 ``[-1]``), ``word_ids`` (-1 where a
    token belongs to no word, and on padding) and ``offsets`` (character span of every token)."""
    return (
        *(TensorSpec(name, "TYPE_INT64", (-1,)) for name in manifest.inputs),
        TensorSpec(WORD_IDS, "TYPE_INT64", (-1,)),
        TensorSpec(OFFSETS, "TYPE_INT64", (-1, 2)),
    )


def decode_texts(column: Any, *, where: str = TEXT) -> list[str]:
    """A ``TYPE_STRING`` input as the Python backend hands it over (object array ``[B, 1]`` of bytes)
    -> one str per row. ValueError names the row that is not one UTF-8 string."""
    arr = np.asarray(column, dtype=object)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != 1:
        raise ValueError(f"{where}: expected shape [batch, 1], got {list(arr.shape)}")
    texts: list[str] = []
    for i, item in enumerate(arr[:, 0].tolist()):
        if isinstance(item, str):
            texts.append(item)
            continue
        if not isinstance(item, bytes):
            raise ValueError(f"{where}[{i}]: expected bytes, got {type(item).__name__}")
        try:
            texts.append(item.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"{where}[{i}]: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    return texts


def _param(params: Mapping[str, str], key: str) -> str:
    return str(params.get(key, TEXT_MODEL_PARAMETERS.get(key, ""))).strip()


def _int_param(params: Mapping[str, str], key: str, *, minimum: int) -> int:
    raw = _param(params, key)
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ConfigError(f"config.pbtxt: parameters.{key}: expected an integer >= {minimum}, got {raw!r}")
    return value


def _check_known(params: Mapping[str, str], known: Mapping[str, str]) -> None:
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"config.pbtxt: parameters {unknown} are not known; known: {sorted(known)}")


def _check_pinned(path: Path, expected: str, key: str) -> None:
    """``path``'s sha256 must be the one written into config.pbtxt at export time (if any)."""
    if not expected:
        return
    if not path.is_file():
        raise BundleError(f"{path}: missing (config.pbtxt pins its sha256 in parameters.{key})")
    actual = hash_file(path)
    if actual != expected.lower():
        raise BundleError(
            f"{path}: sha256 mismatch: config.pbtxt parameters.{key} is {expected}, the file has {actual} "
            f"(changed after export)"
        )


@dataclass(frozen=True, slots=True)
class Request:
    """One inference request as the model sees it: its ``text`` column (None when missing) and the
    outputs the client asked for (empty = all of them)."""

    text: Any
    requested: frozenset[str] = frozenset()


Answer = dict[str, np.ndarray] | str  # output arrays, or the error message of this request


def requests_from_triton(requests: Sequence[Any], pb_utils: Any) -> list[Request]:
    """Triton ``InferenceRequest`` objects -> :class:`Request` (``pb_utils``: Triton's
    ``triton_python_backend_utils`` module, passed in because it exists only inside the server)."""
    out = []
    for r in requests:
        tensor = pb_utils.get_input_tensor_by_name(r, TEXT)
        out.append(
            Request(
                text=None if tensor is None else tensor.as_numpy(),
                requested=frozenset(r.requested_output_names()),
            )
        )
    return out


def responses_to_triton(answers: Sequence[Answer], pb_utils: Any) -> list[Any]:
    """:class:`Answer` s -> Triton ``InferenceResponse`` objects (an error string becomes an error response)."""
    out = []
    for a in answers:
        if isinstance(a, str):
            out.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(a)))
        else:
            tensors = [pb_utils.Tensor(name, value) for name, value in a.items()]
            out.append(pb_utils.InferenceResponse(output_tensors=tensors))
    return out


class TextModel:
    """The text model's logic: requests of raw strings -> per-head answers, through one Engine call."""

    def __init__(self, engine: Engine, *, min_entity_score: float = 0.0) -> None:
        self.engine = engine
        self.min_entity_score = min_entity_score
        self.outputs = text_model_outputs(engine.manifest)
        self._by_name = {s.name: s for s in self.outputs}

    @classmethod
    def load(
        cls, bundle: str | Path, parameters: Mapping[str, str], *, kind: str = "CPU", device_id: str = "0"
    ) -> TextModel:
        """Verify the bundle (every sha256, and manifest.json against ``parameters.manifest_sha256``)
        and load it with the settings in ``parameters`` for an instance of ``kind`` (CPU or GPU)."""
        _check_known(parameters, TEXT_MODEL_PARAMETERS)
        bundle = Path(bundle)
        _check_pinned(bundle / MANIFEST_NAME, _param(parameters, "manifest_sha256"), "manifest_sha256")
        gpu = kind.upper() == "GPU"
        if gpu:
            # every instance is its own stub process: show ONNX Runtime the instance's GPU only
            os.environ["CUDA_VISIBLE_DEVICES"] = str(device_id)
        providers = _param(parameters, "providers") or ("cuda,cpu" if gpu else "cpu")
        min_score_raw = _param(parameters, "min_entity_score")
        try:
            min_score = float(min_score_raw)
        except ValueError:
            min_score = -1.0
        if not 0.0 <= min_score <= 1.0:
            raise ConfigError(
                f"config.pbtxt: parameters.min_entity_score: expected a number in [0, 1], got {min_score_raw!r}"
            )
        tokens = _param(parameters, "max_batch_tokens").lower()
        max_tokens: int | str | None = (
            "auto"
            if tokens in ("", "auto")
            else None
            if tokens == "none"
            else _int_param(parameters, "max_batch_tokens", minimum=1)
        )
        engine = Engine.load(
            bundle,
            providers=[p.strip() for p in providers.split(",") if p.strip()],
            precision=_param(parameters, "precision") or None,
            intra_op_threads=_int_param(parameters, "intra_op_threads", minimum=0),
            inter_op_threads=_int_param(parameters, "inter_op_threads", minimum=0),
            parallel_batches=_int_param(parameters, "parallel_batches", minimum=1),
            batch_size=_int_param(parameters, "batch_size", minimum=1),
            max_batch_tokens=max_tokens,
            verify=True,
        )
        return cls(engine, min_entity_score=min_score)

    # ------------------------------------------------------------------ serving
    def answer(self, requests: Sequence[Request]) -> list[Answer]:
        """One answer per request, in order. All texts of all good requests go through one
        ``Engine.predict`` call (length-bucketed batches); a bad request gets its error alone."""
        texts: list[str] = []
        spans: list[tuple[int, int] | str] = []
        wanted: set[str] = set()
        for i, req in enumerate(requests):
            problem = self._check_request(req)
            if problem:
                spans.append(f"request {i}: {problem}")
                continue
            try:
                got = decode_texts(req.text)
            except ValueError as exc:
                spans.append(str(exc))
                continue
            spans.append((len(texts), len(texts) + len(got)))
            texts.extend(got)
            wanted |= set(req.requested) or set(self._by_name)
        predictions: list[Prediction] = []
        if texts:
            heads = sorted({self._by_name[n].head for n in wanted if self._by_name[n].head})
            predictions = self.engine.predict(
                texts,
                heads=heads,
                return_embedding=EMBEDDING in wanted,
                min_entity_score=self.min_entity_score,
            )
        out: list[Answer] = []
        for req, span in zip(requests, spans, strict=True):
            if isinstance(span, str):
                out.append(span)
                continue
            names = req.requested or frozenset(self._by_name)
            part = predictions[span[0] : span[1]]
            out.append({s.name: _column(s, part) for s in self.outputs if s.name in names})
        return out

    def _check_request(self, req: Request) -> str:
        if req.text is None:
            return f"input {TEXT!r} is missing"
        unknown = sorted(set(req.requested) - set(self._by_name))
        if unknown:
            return f"outputs {unknown} are not outputs of this model; it has {sorted(self._by_name)}"
        return ""


def _column(spec: TensorSpec, predictions: Sequence[Prediction]) -> np.ndarray:
    """``[B, *dims]`` array of one output over a request's predictions."""
    n = len(predictions)
    if spec.name == EMBEDDING:
        return np.stack([p.embedding for p in predictions]).astype(np.float32) if n else _empty(spec)
    if spec.name == TRUNCATED:
        return np.array([[p.truncated] for p in predictions], dtype=bool).reshape(n, 1)
    results = [p.heads[spec.head] for p in predictions]
    if spec.part == "entities":
        return np.array(
            [[json.dumps(_entities(r), ensure_ascii=False).encode("utf-8")] for r in results], dtype=object
        ).reshape(n, 1)
    labels = [r for r in results if isinstance(r, SentenceLabel)]
    if spec.part == "label":
        return np.array([[r.label.encode("utf-8")] for r in labels], dtype=object).reshape(n, 1)
    if spec.part == "score":
        return np.array([[r.score] for r in labels], dtype=np.float32).reshape(n, 1)
    return np.array([list(r.scores.values()) for r in labels], dtype=np.float32).reshape(n, *spec.dims)


def _entities(result: Any) -> list[dict[str, Any]]:
    if not isinstance(result, TokenEntities):
        raise TypeError(f"expected token entities, got {type(result).__name__}")
    return list(result.to_dict()["entities"])


def _empty(spec: TensorSpec) -> np.ndarray:
    return np.empty((0, *spec.dims), dtype=np.float32)


# ---------------------------------------------------------------------------- tokenizer step

TOKENIZER_PARAMETERS: dict[str, str] = {
    "max_seq_len": "",
    "pad_token_id": "0",
    "inputs": "input_ids,attention_mask",
    "pad_to_multiple": "16",
    "tokenizer_sha256": "",
}


class TokenizeStep:
    """The ensemble's first step: texts -> int64 graph inputs padded to a multiple of
    ``pad_to_multiple`` tokens (so that the ONNX model's dynamic batcher can join requests of
    similar length: it batches only equal shapes), ``word_ids`` and ``offsets``."""

    def __init__(self, tokenizer: TextTokenizer, *, pad_to_multiple: int = 16) -> None:
        if pad_to_multiple < 1:
            raise ConfigError(f"pad_to_multiple: expected an integer >= 1, got {pad_to_multiple!r}")
        self.tokenizer = tokenizer
        self.pad_to_multiple = pad_to_multiple

    @classmethod
    def load(cls, tokenizer_json: str | Path, parameters: Mapping[str, str]) -> TokenizeStep:
        _check_known(parameters, TOKENIZER_PARAMETERS)
        path = Path(tokenizer_json)
        _check_pinned(path, str(parameters.get("tokenizer_sha256", "")), "tokenizer_sha256")
        max_seq_len = _int_param(parameters, "max_seq_len", minimum=2) if "max_seq_len" in parameters else 0
        if not max_seq_len:
            raise ConfigError("config.pbtxt: parameters.max_seq_len: missing")
        params = {**TOKENIZER_PARAMETERS, **parameters}
        inputs = tuple(x.strip() for x in params["inputs"].split(",") if x.strip())
        tok = TextTokenizer.from_file(
            path,
            max_seq_len=max_seq_len,
            pad_token_id=_int_param(params, "pad_token_id", minimum=0),
            input_names=inputs,
        )
        return cls(tok, pad_to_multiple=_int_param(params, "pad_to_multiple", minimum=1))

    def run(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Graph inputs ``[B, T]``, ``word_ids`` ``[B, T]`` and ``offsets`` ``[B, T, 2]`` (int64)."""
        encs, _ = self.tokenizer.encode(list(texts))
        feeds = self.tokenizer.pad(encs) if encs else {}
        longest = max((len(e) for e in encs), default=0)
        width = -(-max(longest, 1) // self.pad_to_multiple) * self.pad_to_multiple
        out: dict[str, np.ndarray] = {}
        for name in self.tokenizer.input_names:
            arr = feeds.get(name, np.zeros((0, 0), dtype=np.int64))
            fill = self.tokenizer.pad_token_id if name == "input_ids" else 0
            padded = np.full((len(encs), width), fill, dtype=np.int64)
            padded[:, : arr.shape[1]] = arr
            out[name] = padded
        word_ids = np.full((len(encs), width), -1, dtype=np.int64)
        offsets = np.zeros((len(encs), width, 2), dtype=np.int64)
        for i, e in enumerate(encs):
            k = len(e)
            word_ids[i, :k] = [-1 if w is None else w for w in e.word_ids]
            offsets[i, :k] = e.offsets
        out[WORD_IDS] = word_ids
        out[OFFSETS] = offsets
        return out

    def answer(self, requests: Sequence[Request]) -> list[Answer]:
        """One answer per request (each request is padded on its own)."""
        out: list[Answer] = []
        for i, req in enumerate(requests):
            if req.text is None:
                out.append(f"request {i}: input {TEXT!r} is missing")
                continue
            try:
                arrays = self.run(decode_texts(req.text))
            except ValueError as exc:
                out.append(str(exc))
                continue
            out.append({k: v for k, v in arrays.items() if not req.requested or k in req.requested})
        return out
