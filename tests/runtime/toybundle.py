"""Toy bundles for fast runtime tests, independent of the exporter (imported by conftest and tests).

A *toy* model is a real ONNX graph built with ``onnx.helper`` (word-embedding lookup + token-type
embedding, tanh, masked mean pooling, L2 normalization, linear heads) with the real MiniLM
``tokenizer.json``. Its numpy twin (:meth:`Toy.reference`) computes the same numbers independently, so
engine tests check batching, padding, ordering, head selection and decoding against arithmetic
rather than against the engine itself. Bundles made by the real exporter are tested separately.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtst.runtime.manifest import SCHEMA_VERSION

VOCAB = 30522
DIM = 8
INTENT = ("greet", "bye", "thanks")
NER = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
TOY_ENCODER_SHA = "a" * 64


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Toy:
    """Weights of a toy model, its ONNX graphs and its numpy reference."""

    def __init__(self, tokenizer_json: Path, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.tokenizer_json = tokenizer_json
        self.word = rng.normal(size=(VOCAB, DIM)).astype(np.float32)
        self.types = rng.normal(size=(2, DIM)).astype(np.float32)
        self.w_intent = rng.normal(size=(DIM, len(INTENT))).astype(np.float32)
        self.b_intent = rng.normal(size=(len(INTENT),)).astype(np.float32)
        # NER weights scaled so that several tags win somewhere (entities appear in real sentences)
        self.w_ner = (3 * rng.normal(size=(DIM, len(NER)))).astype(np.float32)
        self.b_ner = np.array([1.0, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)

    # ------------------------------------------------------------------ graphs
    def _encoder_nodes(self) -> tuple[list[Any], list[Any]]:
        from onnx import helper as h
        from onnx import numpy_helper as nh

        inits = [nh.from_array(self.word, "word"), nh.from_array(self.types, "types")]
        inits.append(nh.from_array(np.array([1], dtype=np.int64), "axis1"))
        inits.append(nh.from_array(np.array([-1], dtype=np.int64), "axis_last"))
        nodes = [
            h.make_node("Gather", ["word", "input_ids"], ["we"]),
            h.make_node("Gather", ["types", "token_type_ids"], ["te"]),
            h.make_node("Add", ["we", "te"], ["x"]),
            h.make_node("Tanh", ["x"], ["token_states"]),  # (B, T, D)
            h.make_node("Cast", ["attention_mask"], ["maskf"], to=1),
            h.make_node("Unsqueeze", ["maskf", "axis_last"], ["mask3"]),  # (B, T, 1)
            h.make_node("Mul", ["token_states", "mask3"], ["masked"]),
            h.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),  # (B, D)
            h.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),  # (B, 1)
            h.make_node("Div", ["summed", "count"], ["mean"]),
            h.make_node("LpNormalization", ["mean"], ["embedding"], axis=1, p=2),
        ]
        return nodes, inits

    def _head_nodes(self, sentence: bool, token: bool) -> tuple[list[Any], list[Any]]:
        from onnx import helper as h
        from onnx import numpy_helper as nh

        nodes, inits = [], []
        if sentence:
            inits += [nh.from_array(self.w_intent, "w_intent"), nh.from_array(self.b_intent, "b_intent")]
            nodes += [
                h.make_node("MatMul", ["embedding", "w_intent"], ["intent_mm"]),
                h.make_node("Add", ["intent_mm", "b_intent"], ["intent"]),
            ]
        if token:
            inits += [nh.from_array(self.w_ner, "w_ner"), nh.from_array(self.b_ner, "b_ner")]
            nodes += [
                h.make_node("MatMul", ["token_states", "w_ner"], ["ner_mm"]),
                h.make_node("Add", ["ner_mm", "b_ner"], ["ner"]),
            ]
        return nodes, inits

    @staticmethod
    def _model(nodes: list[Any], inits: list[Any], inputs: list[Any], outputs: list[Any]) -> Any:
        from onnx import helper as h

        graph = h.make_graph(nodes, "toy", inputs, outputs, inits)
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], producer_name="mtst-tests")
        model.ir_version = 8
        return model

    def graphs(self, layout: str, *, sentence: bool = True, token: bool = True) -> dict[str, Any]:
        """role -> ModelProto for a layout ("single", "split", "heads")."""
        from onnx import TensorProto
        from onnx import helper as h

        ids = [
            h.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
            for n in ("input_ids", "attention_mask", "token_type_ids")
        ]
        emb = h.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", DIM])
        states = h.make_tensor_value_info("token_states", TensorProto.FLOAT, ["batch", "sequence", DIM])
        intent = h.make_tensor_value_info("intent", TensorProto.FLOAT, ["batch", len(INTENT)])
        ner = h.make_tensor_value_info("ner", TensorProto.FLOAT, ["batch", "sequence", len(NER)])
        enc_nodes, enc_inits = self._encoder_nodes()
        out: dict[str, Any] = {}
        if layout == "single":
            hn, hi = self._head_nodes(sentence, token)
            outs = [emb] + ([intent] if sentence else []) + ([ner] if token else [])
            out["model"] = self._model(enc_nodes + hn, enc_inits + hi, ids, outs)
            return out
        if layout == "split":
            out["encoder"] = self._model(enc_nodes, enc_inits, ids, [emb] + ([states] if token else []))
        hn, hi = self._head_nodes(sentence, False)
        if not sentence:  # a heads graph needs an output: pass the embedding through
            hn = [h.make_node("Identity", ["embedding"], ["embedding_out"])]
            intent = h.make_tensor_value_info("embedding_out", TensorProto.FLOAT, ["batch", DIM])
        out["heads"] = self._model(hn, hi, [emb], [intent])
        if token:
            tn, ti = self._head_nodes(False, True)
            out["token_heads"] = self._model(tn, ti, [states], [ner])
        return out

    # ------------------------------------------------------------------ bundles
    def bundle(
        self,
        out: Path,
        *,
        layout: str = "single",
        precision: str = "fp32",
        sentence: bool = True,
        token: bool = True,
        max_seq_len: int = 32,
        encoder_sha256: str | None = TOY_ENCODER_SHA,
        extra_variants: Sequence[tuple[str, str]] = (),
    ) -> Path:
        """Write a bundle folder; ``extra_variants`` adds (precision, layout) copies of the same graphs."""
        import onnx

        out.mkdir(parents=True, exist_ok=True)
        files: dict[str, dict[str, Any]] = {}
        variants = []
        for prec, lay in [(precision, layout), *extra_variants]:
            graphs = {}
            for role, model in self.graphs(lay, sentence=sentence, token=token).items():
                name = f"{role}.onnx" if (prec, lay) == (precision, layout) else f"{role}.{prec}.{lay}.onnx"
                onnx.save(model, out / name)
                graphs[role] = name
            variants.append({"precision": prec, "layout": lay, "graphs": graphs, "opset": 17})
        tok = json.loads(self.tokenizer_json.read_text(encoding="utf-8"))
        tok["truncation"] = None
        tok["padding"] = None
        (out / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
        heads = []
        if sentence:
            heads.append(
                {
                    "name": "intent",
                    "kind": "sentence_classification",
                    "output": "intent",
                    "labels": list(INTENT),
                }
            )
        if token:
            heads.append(
                {
                    "name": "ner",
                    "kind": "token_classification",
                    "output": "ner",
                    "labels": list(NER),
                    "scheme": "IOB2",
                }
            )
        for p in sorted(out.iterdir()):
            if p.name != "manifest.json":
                files[p.name] = {"sha256": _sha(p), "bytes": p.stat().st_size}
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "mtst_version": "test",
            "inputs": ["input_ids", "attention_mask", "token_type_ids"],
            "max_seq_len": max_seq_len,
            "pooling": "mean",
            "embedding_dim": DIM,
            "tokenizer": "tokenizer.json",
            "pad_token_id": 0,
            "heads": heads,
            "variants": variants,
            "files": files,
            "encoder_sha256": encoder_sha256,
            "parity": None,
            "provenance": {"made_by": "tests/runtime/conftest.py"},
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        return out

    # ------------------------------------------------------------------ numpy twin
    def reference(self, texts: Sequence[str], *, max_seq_len: int = 32) -> list[dict[str, Any]]:
        """Per text: embedding, token_states, intent logits, ner logits, encoding (one text at a time)."""
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.tokenizer_json))
        tok.no_padding()
        tok.enable_truncation(max_seq_len)
        out = []
        for t in texts:
            e = tok.encode(t)
            ids = np.array(e.ids)
            x = np.tanh(self.word[ids] + self.types[np.array(e.type_ids)])  # (T, D)
            mean = x.mean(axis=0)
            emb = mean / np.linalg.norm(mean)
            out.append(
                {
                    "embedding": emb.astype(np.float32),
                    "token_states": x,
                    "intent": emb @ self.w_intent + self.b_intent,
                    "ner": x @ self.w_ner + self.b_ner,
                    "encoding": e,
                    "truncated": len(e.overflowing) > 0,
                }
            )
        return out


SENTENCES = [
    "Apple opened an office in Paris.",
    "Great movie!",
    "",
    "   ",
    "Angela Merkel met Emmanuel Macron in Berlin on Tuesday to discuss the budget.",
    "hi",
    "你好世界 😀 emoji and ümlauts",
    "tab\tand\nnewline and control \x07 chars",
    "a " * 200,  # longer than max_seq_len: truncated
    "Thanks a lot, see you tomorrow in New York!",
]
