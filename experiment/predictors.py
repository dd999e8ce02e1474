"""What ``mtst-eval`` runs: a bundle variant (:class:`EnginePredictor`, torch-free) or a checkpoint's torch
model (:class:`TorchPredictor`), each answering every head with thresholds off, calibrated scores on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mtst.errors import ConfigError, DataError
from mtst.runtime.results import SentenceLabel, TokenEntities

__all__ = ["Answers", "EnginePredictor", "HeadView", "Predictor", "TokenRows", "TorchPredictor"]


@dataclass(frozen=True)
class HeadView:
    """What scoring needs of a head: kind (``sentence``/``token``), labels, its threshold for this run."""

    kind: str
    labels: tuple[str, ...]
    threshold: float


Answers = dict[str, list[SentenceLabel] | list[TokenEntities]]
TokenRows = list[tuple[np.ndarray, np.ndarray]]  # per text: sub-token char offsets (T, 2), logits (T, L)


class Predictor(Protocol):
    heads: Mapping[str, HeadView]

    def run(self, texts: list[str], *, rows_of: str | None = None) -> tuple[Answers, TokenRows | None]:
        """Every head on ``texts``, thresholds off (scores calibrated, every entity kept); with
        ``rows_of`` (a token head) also that head's logits and sub-token offsets per text."""
        ...


def _views(
    heads: Iterable[tuple[str, str, Sequence[str], float]],
    thresholds: Mapping[str, float] | None,
    abstain: bool,
) -> dict[str, HeadView]:
    """(name, kind, labels, threshold of the bundle/checkpoint) -> views with ``thresholds`` applied."""
    heads = list(heads)
    unknown = sorted(set(thresholds or {}) - {h[0] for h in heads})
    if unknown:
        raise ConfigError(f"--threshold: unknown head(s) {unknown}; the heads are {[h[0] for h in heads]}")
    return {
        name: HeadView(kind, tuple(labels), (thresholds or {}).get(name, threshold) if abstain else 0.0)
        for name, kind, labels, threshold in heads
    }


class EnginePredictor:
    """A loaded bundle variant (:class:`mtst.runtime.Engine`)."""

    def __init__(
        self, engine: Any, *, thresholds: Mapping[str, float] | None = None, abstain: bool = True
    ) -> None:
        from mtst.runtime.manifest import HeadKind

        self.engine = engine
        self._tok: Any = None
        heads = engine.heads.values()
        self.heads = _views(
            (
                (h.name, "sentence" if h.kind is HeadKind.SENTENCE else "token", h.labels, h.threshold)
                for h in heads
            ),
            thresholds,
            abstain,
        )

    def run(self, texts: list[str], *, rows_of: str | None = None) -> tuple[Answers, TokenRows | None]:
        preds = self.engine.predict(texts, abstain=False, return_logits=rows_of is not None)
        answers = {name: [p.heads[name] for p in preds] for name in self.heads}
        if rows_of is None:
            return answers, None  # type: ignore[return-value]
        # the runtime's own tokenization (same file, same truncation) gives the offsets of its logits rows
        encs = self._tokenizer().encode_batch(texts, add_special_tokens=True)
        rows = []
        for p, e in zip(preds, encs, strict=True):
            assert p.logits is not None
            logits = p.logits[rows_of]
            if len(logits) != len(e.offsets):
                raise DataError(f"{p.text[:40]!r}: {len(logits)} logits rows for {len(e.offsets)} tokens")
            rows.append((np.asarray(e.offsets, dtype=np.int64), logits))
        return answers, rows  # type: ignore[return-value]

    def _tokenizer(self) -> Any:
        if self._tok is None:
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_file(str(self.engine.bundle.tokenizer_path))
            self._tok.no_padding()
            self._tok.enable_truncation(self.engine.bundle.manifest.max_seq_len)
        return self._tok


class TorchPredictor:
    """A checkpoint's torch model, decoded like the runtime does (its temperatures, raw text with offsets)."""

    def __init__(
        self,
        checkpoint: Path,
        *,
        thresholds: Mapping[str, float] | None = None,
        abstain: bool = True,
        batch_size: int = 32,
    ) -> None:
        from mtst.model import load_model

        self.model = load_model(checkpoint).eval()
        self.batch_size = batch_size
        tasks = self.model.tasks.values()
        self.heads = _views(
            (
                (
                    t.name,
                    "sentence" if t.kind.value == "sentence_classification" else "token",
                    t.labels,
                    t.threshold,
                )
                for t in tasks
            ),
            thresholds,
            abstain,
        )

    def run(self, texts: list[str], *, rows_of: str | None = None) -> tuple[Answers, TokenRows | None]:
        out: dict[str, list[Any]] = {name: [None] * len(texts) for name in self.heads}
        rows: list[Any] = [None] * len(texts)
        order = np.argsort([len(t) for t in texts], kind="stable")
        for s in range(0, len(order), self.batch_size):
            idx = [int(i) for i in order[s : s + self.batch_size]]
            answers_of, batch_rows = self._batch([texts[i] for i in idx], rows_of)
            for name, answers in answers_of.items():
                for i, a in zip(idx, answers, strict=True):
                    out[name][i] = a
            for i, r in zip(idx, batch_rows, strict=False):
                rows[i] = r
        return out, (rows if rows_of is not None else None)

    def _batch(self, texts: list[str], rows_of: str | None) -> tuple[dict[str, list[Any]], TokenRows]:
        import torch

        from mtst.runtime.results import HeadDecoding, decode_sentence, decode_tokens

        model = self.model
        enc = model.tokenizer(
            texts, padding=True, truncation=True, max_length=model.max_seq_len, return_offsets_mapping=True
        )
        inputs = {k: torch.tensor(enc[k], dtype=torch.long) for k in model.input_names if k in enc}
        with torch.inference_mode():
            logits = {k: v.float().numpy() for k, v in model(**inputs).logits.items()}
        out: dict[str, list[Any]] = {}
        rows: TokenRows = []
        for i in range(len(texts) if rows_of is not None else 0):
            n = int(sum(enc["attention_mask"][i]))
            rows.append((np.asarray(enc["offset_mapping"][i][:n], dtype=np.int64), logits[rows_of][i, :n]))
        for name, spec in model.tasks.items():
            dec = HeadDecoding(spec.temperature, 0.0)
            if spec.kind.value == "sentence_classification":
                out[name] = decode_sentence(logits[name], spec.labels, dec)
                continue
            out[name] = []
            for i, text in enumerate(texts):
                n = int(sum(enc["attention_mask"][i]))
                ids, offsets = enc.word_ids(i)[:n], enc["offset_mapping"][i][:n]
                out[name].append(decode_tokens(text, logits[name][i, :n], ids, offsets, spec.labels, dec))
        return out, rows
