"""Metrics of any logits function on a task's examples (docs/architecture.md, Contract 2).

``evaluate_task`` is numpy in, numpy out, so the same code scores the torch model during training
(:func:`torch_logits_fn`) and an exported ONNX graph (export's accuracy guard passes an ONNX Runtime
function). Examples are batched by length and the predictions put back in input order. Torch-free
except :func:`torch_logits_fn`, which imports torch when called.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mtst.alignment import encode_sentence_batch, encode_token_batch, predictions_to_tags
from mtst.data import Example, SentenceExample, TaskData, TokenExample, check_labels
from mtst.errors import ConfigError, DataError
from mtst.metrics import primary_metric, sentence_metrics, token_metrics
from mtst.tasks import TaskKind, TaskSpec

if TYPE_CHECKING:  # torch-free at import: the model is only a type here
    import torch

    from mtst.model import MultiTaskModel

__all__ = [
    "LogitsFn",
    "TaskEvaluation",
    "evaluate_task",
    "evaluate_tasks",
    "memo_logits_fn",
    "selection_score",
    "torch_logits_fn",
]

LogitsFn = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class TaskEvaluation:
    metrics: dict[str, float]
    predictions: list[str] | list[list[str]]  # labels per example, or tags per token


def evaluate_task(
    logits_fn: LogitsFn,
    tokenizer: Any,
    task: TaskSpec,
    examples: Sequence[Example],
    *,
    max_seq_len: int,
    batch_size: int = 64,
) -> TaskEvaluation:
    """Score ``task`` on ``examples``: ``logits_fn(batch) -> (B, L)`` or ``(B, T, L)`` logits.

    ``batch`` holds int64 ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the tokenizer
    makes them). Labels the task was not trained on raise DataError naming the example.
    """
    if not examples:
        raise DataError(f"task {task.name!r}: no examples to evaluate")
    if batch_size < 1:
        raise ConfigError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    check_labels(examples, task.labels, what=f"evaluation data of task {task.name!r}")
    if task.kind is TaskKind.SENTENCE:
        sentences = [_sentence(ex, task) for ex in examples]
        order = np.argsort([len(ex.text) for ex in sentences], kind="stable")
        pred_ids = np.empty(len(sentences), dtype=np.int64)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = encode_sentence_batch(
                tokenizer, [sentences[i].text for i in idx], max_seq_len=max_seq_len
            )
            logits = _check_logits(logits_fn(batch), (len(idx), task.num_labels), task)
            pred_ids[idx] = logits.argmax(axis=-1)
        preds = [task.labels[int(i)] for i in pred_ids]
        return TaskEvaluation(sentence_metrics([ex.label for ex in sentences], preds), preds)

    tokens = [_token(ex, task) for ex in examples]
    label_to_id = {label: i for i, label in enumerate(task.labels)}
    order = np.argsort([len(ex.tokens) for ex in tokens], kind="stable")
    tags: list[list[str]] = [[] for _ in tokens]
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch, _, first = encode_token_batch(
            tokenizer, [tokens[i] for i in idx], label_to_id, max_seq_len=max_seq_len
        )
        b, t = batch["input_ids"].shape
        logits = _check_logits(logits_fn(batch), (b, t, task.num_labels), task)
        for i, seq in zip(idx, predictions_to_tags(logits, first, task.labels), strict=True):
            tags[int(i)] = seq
    return TaskEvaluation(token_metrics([list(ex.tags) for ex in tokens], tags), tags)


def _sentence(ex: Example, task: TaskSpec) -> SentenceExample:
    if not isinstance(ex, SentenceExample):
        raise DataError(f"{ex.where}: task {task.name!r} is a sentence task, got a {type(ex).__name__}")
    return ex


def _token(ex: Example, task: TaskSpec) -> TokenExample:
    if not isinstance(ex, TokenExample):
        raise DataError(f"{ex.where}: task {task.name!r} is a token task, got a {type(ex).__name__}")
    return ex


def _check_logits(logits: Any, shape: tuple[int, ...], task: TaskSpec) -> np.ndarray:
    arr = np.asarray(logits)
    if arr.shape != shape:
        raise ConfigError(
            f"task {task.name!r}: the logits function returned shape {arr.shape}, expected {shape}"
        )
    return arr


def selection_score(
    metrics: Mapping[str, Mapping[str, float]], kinds: Mapping[str, TaskKind], metric: str
) -> float:
    """The number model selection maximizes: ``mean`` of primary metrics, or ``<task>.<metric>``."""
    if metric == "mean":
        values = [metrics[t][primary_metric(kinds[t])] for t in metrics]
        return float(sum(values) / len(values)) if values else math.nan
    task, name = metric.split(".", 1)
    if task not in metrics:
        raise ConfigError(
            f"eval.metric {metric!r}: task {task!r} is not evaluated here (evaluated: {sorted(metrics)})"
        )
    if name not in metrics[task]:
        raise ConfigError(
            f"eval.metric {metric!r}: task {task!r} has no metric {name!r}; it has {sorted(metrics[task])}"
        )
    return float(metrics[task][name])


def torch_logits_fn(model: MultiTaskModel, task: str) -> LogitsFn:
    """A logits function over a torch :class:`~mtst.model.MultiTaskModel` (eval mode, no grad)."""
    import torch

    def fn(batch: dict[str, np.ndarray]) -> np.ndarray:
        device = model.device
        inputs = {k: torch.from_numpy(v).to(device) for k, v in batch.items() if k in model.input_names}
        with torch.inference_mode():
            out = model(**inputs, tasks=[task])
        return out.logits[task].float().cpu().numpy()

    return fn


def memo_logits_fn(model: MultiTaskModel, task: str, memo: dict[bytes, torch.Tensor]) -> LogitsFn:
    """Logits of ``task`` whose encoder part is remembered per input batch (a frozen encoder only:
    evaluations during a stage that trains heads alone then run the encoder once)."""
    import torch

    kind = model.tasks[task].kind

    def fn(batch: dict[str, np.ndarray]) -> np.ndarray:
        key = b"".join(batch[k].tobytes() + str(batch[k].shape).encode() for k in sorted(batch))
        with torch.inference_mode():
            feats = memo.get(key)
            if feats is None:
                inputs = {
                    k: torch.from_numpy(v).to(model.device)
                    for k, v in batch.items()
                    if k in model.input_names
                }
                states, emb = model.encode_tokens(**inputs)
                feats = memo[key] = emb if kind is TaskKind.SENTENCE else states
            return model.heads[task](feats).float().cpu().numpy()  # type: ignore[no-any-return]

    return fn


def evaluate_tasks(
    model: MultiTaskModel,
    data: Mapping[str, TaskData],
    tasks: Sequence[str],
    *,
    split: str = "validation",
    batch_size: int = 64,
    memo: dict[str, dict[bytes, torch.Tensor]] | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics per task of the torch ``model`` on ``split`` (``validation`` or ``test``; tasks without
    that split are left out). ``memo`` (a frozen encoder only) keeps the encoder's outputs per batch."""
    model.eval()
    out: dict[str, dict[str, float]] = {}
    for t in tasks:
        d = data[t]
        examples = d.validation if split == "validation" else d.test
        if not examples:
            continue
        fn = (
            memo_logits_fn(model, t, memo.setdefault(t, {}))
            if memo is not None
            else torch_logits_fn(model, t)
        )
        out[t] = evaluate_task(
            fn, model.tokenizer, d.spec, examples, max_seq_len=model.max_seq_len, batch_size=batch_size
        ).metrics
    return out
