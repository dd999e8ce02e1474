"""The torch fp32 reference: the checkpoint's MultiTaskModel in torch eager mode.

Every fidelity figure is measured against it (embeddings, and per head the label of each sentence or
the tag of each word), and the ``torch`` peer runs it end to end. Needs the ``compare`` extra
(torch, transformers); torch is imported when a reference is built, not with this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtst.runtime.decode import decode_entities, word_starts

from .systems import HeadLabels

__all__ = ["TorchReference"]


class TorchReference:
    """The checkpoint's MultiTaskModel in torch eager fp32: reference embeddings, labels and answers."""

    def __init__(self, checkpoint: Path, *, threads: int) -> None:
        from mtst.errors import require

        torch: Any = require("torch", "compare", "the torch peer and the fidelity reference")
        require("transformers", "compare", "the torch peer and the fidelity reference")
        torch.set_num_threads(threads)
        from mtst.model import MultiTaskModel

        self.torch = torch
        self.checkpoint = checkpoint
        self.model: MultiTaskModel = MultiTaskModel.from_pretrained(checkpoint).eval()
        self.tokenizer = self.model.tokenizer
        self.threads = threads

    def _encode(self, texts: Sequence[str]) -> Any:
        return self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.model.max_seq_len,
            return_tensors="pt",
            return_offsets_mapping=True,
        )

    def _forward(self, enc: Any) -> Any:
        inputs = {k: v for k, v in enc.items() if k in self.model.input_names}
        with self.torch.inference_mode():
            return self.model(**inputs)

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """End to end, like ``Engine.predict``: tokenize, one forward pass, labels and entities per head."""
        texts = list(texts)
        enc = self._encode(texts)
        out = self._forward(enc)
        results: list[dict[str, Any]] = [{} for _ in texts]
        for name, task in self.model.tasks.items():
            probs = self.torch.softmax(out.logits[name].float(), dim=-1)
            best = probs.argmax(-1)
            if task.kind.value == "sentence_classification":
                for i in range(len(texts)):
                    results[i][name] = task.labels[int(best[i])]
            else:
                score = probs.max(-1).values
                for i, text in enumerate(texts):
                    n = int(enc["attention_mask"][i].sum())
                    results[i][name] = decode_entities(
                        text,
                        enc.word_ids(i)[:n],
                        [tuple(o) for o in enc["offset_mapping"][i][:n].tolist()],
                        best[i][:n].tolist(),
                        score[i][:n].tolist(),
                        task.labels,
                    )
        return results

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        chunks = []
        for i in range(0, len(texts), batch_size):
            chunks.append(self._forward(self._encode(texts[i : i + batch_size])).embedding.float().numpy())
        return np.concatenate(chunks).astype(np.float32)

    def labels(self, texts: Sequence[str], *, batch_size: int = 32) -> HeadLabels:
        """Sentence heads: the argmax label; token heads: the tag of each word's first sub-token."""
        out: HeadLabels = {name: [] for name in self.model.tasks}
        for start in range(0, len(texts), batch_size):
            enc = self._encode(texts[start : start + batch_size])
            res = self._forward(enc)
            for name, task in self.model.tasks.items():
                best = res.logits[name].argmax(-1)
                for i in range(best.shape[0]):
                    if task.kind.value == "sentence_classification":
                        out[name].append(task.labels[int(best[i])])
                    else:
                        firsts = word_starts(enc.word_ids(i))
                        out[name].append(tuple(task.labels[int(best[i][j])] for j in firsts))
        return out
