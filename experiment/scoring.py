"""``mtst-eval``: scores of an exported bundle (or a checkpoint) on labelled files, the way an app sees them.

Each labelled file belongs to one head (``--data intent=banking77/test.csv``); out-of-domain files
(``--ood clinc=clinc150/data_full.json#oos_test``) hold texts that head should not answer (``*=PATH``:
no head should). Every head
runs on every file in one pass, so besides each head's own metrics the report has the **cross-domain
abstention matrix**: how often a head declines the other heads' sentences.

- sentence head, own data: accuracy and macro-F1 (arg-max, thresholds ignored), ECE (15 bins) and
  Brier score of the calibrated probabilities, coverage (share answered at the threshold), selective
  accuracy (right among those answered), accuracy at the threshold (right *and* answered);
- token head, own data: entity precision / recall / F1 with entities under the threshold dropped (what
  an app gets) and ``f1_all`` without the threshold (what training's evaluation reports), ECE and
  Brier of entity scores (an entity is right when span and type match), coverage of predicted entities;
- out-of-domain file / another head's file: share abstained (sentence head: score under the threshold;
  token head: no entity left), and for sentence heads AUROC and FPR at 95% TPR of the top probability
  against the head's own data.

Nothing here imports torch for a bundle (the runtime runs it); ``--checkpoint`` scores the torch model
the same way (:mod:`mtst.experiment.predictors`, torch imported when a checkpoint's predictor is built). Labelled files are read by
:mod:`mtst.data` with the column settings of the task in the bundle's training config.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtst.calibration import auroc, brier, ece, fpr_at_tpr
from mtst.data import (
    DataFormat,
    DataSource,
    Example,
    SentenceExample,
    TokenExample,
    load_examples,
    load_texts,
)
from mtst.errors import ConfigError, DataError
from mtst.experiment.predictors import HeadView, Predictor, TokenRows
from mtst.runtime.decode import Entity, bio_spans
from mtst.runtime.results import SentenceLabel, TokenEntities

__all__ = [
    "ANY_HEAD",
    "EvalFile",
    "parse_file_option",
    "read_eval_files",
    "score_predictor",
]

ANY_HEAD = "*"  # --ood *=PATH: texts that no head should answer
_CHUNK = 256  # texts per predictor call: steady progress, bounded memory


@dataclass(frozen=True)
class EvalFile:
    task: str  # the head this file belongs to
    name: str  # as given on the command line
    texts: list[str]
    examples: list[Example] | None  # None: an out-of-domain file (texts only)


# ---------------------------------------------------------------------------------------------- reading
def parse_file_option(value: str, option: str) -> tuple[str, str, str | None]:
    """``TASK=PATH`` or ``TASK=PATH#SPLIT`` (SPLIT: the key inside a JSON split file) -> parts."""
    task, sep, rest = value.partition("=")
    path, _, split = rest.partition("#")
    if not sep or not task.strip() or not path.strip():
        raise ConfigError(f"{option} {value!r}: expected TASK=PATH or TASK=PATH#SPLIT")
    return task.strip(), path.strip(), split.strip() or None


def _source(
    path: str,
    split: str | None,
    fmt: str | None,
    template: Mapping[str, Any] | None,
    limit: int | None = None,
) -> DataSource:
    """A data source for ``path``: the task's column settings (``template``, a source of its training
    config) when the file has the same format, else the defaults; ``fmt`` for a suffix that says nothing."""
    fields: dict[str, Any] = {"path": path}
    if fmt is not None:
        fields["format"] = fmt
    try:
        plain = DataSource(**fields)
        if template is not None:
            tpl = DataSource.from_dict(dict(template))
            if plain.resolved_format is tpl.resolved_format:
                keep = {
                    k: v for k, v in tpl.to_dict().items() if k not in ("path", "limit", "seed", "format")
                }
                fields = {**keep, **fields, "split": tpl.split, "extra_splits": []}
        if split is not None:
            fields["split"], fields["extra_splits"] = split, []
        return DataSource(**fields, limit=limit)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _sniff_text_file(path: Path) -> str | None:
    """``lines`` for a ``.txt`` file of plain sentences, None (the suffix's own format: CoNLL) for one whose
    first line ends in a tag (``O``, ``B-X``, ``I-X``) or starts a CoNLL document."""
    if path.suffix.lower() != ".txt" or not path.is_file():
        return None
    with open(path, encoding="utf-8", errors="replace") as fh:
        first = next((line.split() for line in fh if line.strip()), [])
    conll = len(first) >= 2 and (
        first[0] == "-DOCSTART-" or first[-1] == "O" or first[-1][:2] in ("B-", "I-")
    )
    return None if conll else "lines"


def _template(training_config: Mapping[str, Any] | None, task: str) -> Mapping[str, Any] | None:
    for t in (training_config or {}).get("tasks", []):
        if t.get("name") == task:
            src = t.get("test") or t.get("validation") or t.get("train")
            return {"path": src} if isinstance(src, str) else src
    return None


def read_eval_files(
    data: Sequence[str],
    ood: Sequence[str],
    heads: Mapping[str, HeadView],
    *,
    formats: Mapping[str, str] | None = None,
    data_root: Path | None = None,
    training_config: Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> list[EvalFile]:
    """The ``--data`` (labelled) and ``--ood`` (texts) files, read for the heads they name; ``limit``:
    at most that many examples a file (a seeded sample, file order kept)."""
    formats = dict(formats or {})
    for task, given in formats.items():
        if task not in heads and task != ANY_HEAD:
            raise ConfigError(f"--format {task}={given}: no head {task!r}; the heads are {sorted(heads)}")
    out: list[EvalFile] = []
    seen: set[str] = set()
    for option, values in (("--data", data), ("--ood", ood)):
        for value in values:
            task, path, split = parse_file_option(value, option)
            fmt: str | None = formats.get(task)
            if option == "--ood" and fmt is None:
                fmt = _sniff_text_file(data_root / path if data_root is not None else Path(path))
            if option == "--ood" and task == ANY_HEAD:  # texts that no head should answer
                source = _source(path, split, fmt, None, limit)
                out.append(EvalFile(task, value, load_texts(source, data_root=data_root), None))
                continue
            if task not in heads:
                raise ConfigError(f"{option} {value!r}: no head {task!r}; the heads are {sorted(heads)}")
            if option == "--data" and task in seen:
                raise ConfigError(f"--data: head {task!r} given twice")
            seen.add(task)
            source = _source(path, split, fmt, _template(training_config, task), limit)
            if option == "--ood":
                out.append(
                    EvalFile(task, value.split("=", 1)[1], load_texts(source, data_root=data_root), None)
                )
                continue
            kind = "token_classification" if heads[task].kind == "token" else "sentence_classification"
            if source.resolved_format is DataFormat.LINES:
                raise ConfigError(f"--data {value!r}: a 'lines' file has no labels; give it with --ood")
            examples = load_examples(source, kind, data_root=data_root)
            texts = [" ".join(ex.tokens) if isinstance(ex, TokenExample) else ex.text for ex in examples]
            out.append(EvalFile(task, value.split("=", 1)[1], texts, examples))
    if not any(f.examples is not None for f in out):
        raise ConfigError("mtst-eval: give at least one labelled file with --data TASK=PATH")
    return out


# ---------------------------------------------------------------------------------------------- running
@dataclass
class _Outputs:
    """One head's answers on one file: top probabilities and probabilities (sentence) or entities (token)."""

    probs: np.ndarray | None = None  # (N, L)
    entities: list[tuple[Entity, ...]] | None = None
    rows: TokenRows | None = None  # the file's own token head: logits per sub-token


def _run_file(predictor: Predictor, f: EvalFile, tick: Callable[[int], None]) -> dict[str, _Outputs]:
    out: dict[str, _Outputs] = {name: _Outputs() for name in predictor.heads}
    probs: dict[str, list[np.ndarray]] = {}
    ents: dict[str, list[tuple[Entity, ...]]] = {}
    own_token = f.examples is not None and predictor.heads[f.task].kind == "token"
    rows: TokenRows = []
    for s in range(0, len(f.texts), _CHUNK):
        chunk = f.texts[s : s + _CHUNK]
        answers_of, chunk_rows = predictor.run(chunk, rows_of=f.task if own_token else None)
        rows.extend(chunk_rows or [])
        for name, answers in answers_of.items():
            view = predictor.heads[name]
            if view.kind == "sentence":
                table = [
                    [a.scores[label] for label in view.labels]
                    for a in answers
                    if isinstance(a, SentenceLabel)
                ]
                probs.setdefault(name, []).append(np.asarray(table, dtype=np.float64))
            else:
                ents.setdefault(name, []).extend(a.entities for a in answers if isinstance(a, TokenEntities))
        tick(len(chunk))
    for name, parts in probs.items():
        out[name].probs = np.concatenate(parts)
    for name, found in ents.items():
        out[name].entities = found
    if own_token:
        out[f.task].rows = rows
    return out


# ---------------------------------------------------------------------------------------------- metrics
def _sentence_metrics(probs: np.ndarray, examples: Sequence[Example], view: HeadView) -> dict[str, float]:
    from mtst.metrics import sentence_metrics

    ids = {label: i for i, label in enumerate(view.labels)}
    gold_labels = [ex.label for ex in examples if isinstance(ex, SentenceExample)]
    unknown = sorted({g for g in gold_labels if g not in ids})
    if unknown:
        raise DataError(
            f"labels {unknown[:5]} are not labels of the head (it has {len(ids)}: {list(ids)[:5]}...)"
        )
    gold = np.array([ids[g] for g in gold_labels], dtype=np.int64)
    pred, conf = probs.argmax(axis=1), probs.max(axis=1)
    right, answered = pred == gold, conf >= view.threshold
    m = sentence_metrics(gold_labels, [view.labels[int(k)] for k in pred])
    return {
        "examples": len(gold),
        **m,
        "ece": ece(conf, right),
        "brier": brier(probs, gold),
        "coverage": float(answered.mean()),
        "selective_accuracy": float(right[answered].mean()) if answered.any() else math.nan,
        "accuracy_at_threshold": float((right & answered).mean()),
    }


def _token_spans(
    tokens: Sequence[str], entities: Iterable[Entity]
) -> list[tuple[Entity, tuple[str, int, int]]]:
    """Each entity (character offsets into the tokens joined by single spaces) with its span in tokens:
    the tokens it overlaps (an entity overlapping an earlier one's tokens is left out)."""
    starts, pos = [], 0
    for tok in tokens:
        starts.append(pos)
        pos += len(tok) + 1
    taken: set[int] = set()
    out: list[tuple[Entity, tuple[str, int, int]]] = []
    for e in entities:
        inside = [k for k, s in enumerate(starts) if s < e.end and s + len(tokens[k]) > e.start]
        if inside and not taken.intersection(inside):
            taken.update(inside)
            out.append((e, (e.label, inside[0], inside[-1] + 1)))
    return out


def _tags(n: int, spans: Iterable[tuple[str, int, int]]) -> list[str]:
    tags = ["O"] * n
    for label, a, b in spans:
        tags[a:b] = [f"B-{label}"] + [f"I-{label}"] * (b - a - 1)
    return tags


def _word_tags(
    tokens: Sequence[str], offsets: np.ndarray, logits: np.ndarray, labels: Sequence[str]
) -> list[str]:
    """Training's tags (mtst.alignment.predictions_to_tags): each given token's tag is the arg-max at its
    first sub-token; tokens cut off by truncation are ``O``. ``offsets`` index the tokens joined by spaces."""
    firsts = np.asarray(offsets)[:, 0]
    real = np.asarray(offsets)[:, 1] > firsts  # special tokens have empty spans
    tags, pos = [], 0
    for tok in tokens:
        inside = np.flatnonzero(real & (firsts >= pos) & (firsts < pos + len(tok)))
        tags.append(labels[int(logits[inside[0]].argmax())] if len(inside) else "O")
        pos += len(tok) + 1
    return tags


def _token_metrics(
    found: list[tuple[Entity, ...]], rows: TokenRows | None, examples: Sequence[Example], view: HeadView
) -> dict[str, float]:
    from mtst.metrics import token_metrics

    tokens = [ex for ex in examples if isinstance(ex, TokenExample)]
    gold = [list(ex.tags) for ex in tokens]
    every, kept, scores, right = [], [], [], []
    for k, (ex, ents) in enumerate(zip(tokens, found, strict=True)):
        pairs = _token_spans(ex.tokens, ents)
        truth = set(bio_spans(ex.tags))
        if rows is not None:  # word-level tags as training evaluates them
            every.append(_word_tags(ex.tokens, rows[k][0], rows[k][1], view.labels))
        else:
            every.append(_tags(len(ex.tokens), [sp for _, sp in pairs]))
        kept.append(_tags(len(ex.tokens), [sp for e, sp in pairs if e.score >= view.threshold]))
        scores += [e.score for e, _ in pairs]
        right += [sp in truth for _, sp in pairs]
    conf, ok = np.asarray(scores, dtype=np.float64), np.asarray(right, dtype=bool)
    at = token_metrics(gold, kept)
    answered = conf >= view.threshold
    return {
        "examples": len(tokens),
        "precision": at["precision"],
        "recall": at["recall"],
        "f1": at["f1"],
        "f1_all": token_metrics(gold, every)["f1"],
        "entities": len(conf),
        "ece": ece(conf, ok) if len(conf) else math.nan,
        "brier": brier(conf, ok.astype(np.int64)) if len(conf) else math.nan,
        "coverage": float(answered.mean()) if len(conf) else math.nan,
    }


def _declined(out: _Outputs, view: HeadView) -> np.ndarray:
    """Per text: the head declines it (sentence: score under threshold; token: no entity kept)."""
    if out.probs is not None:
        return np.asarray(out.probs.max(axis=1) < view.threshold)
    assert out.entities is not None
    return np.array([not any(e.score >= view.threshold for e in ents) for ents in out.entities])


def score_predictor(
    predictor: Predictor, files: Sequence[EvalFile], *, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Every head on every file: ``{"heads": {head: metrics on its own data}, "cross": {head: {file:
    {"declined", "auroc", "fpr_at_95_tpr"}}}}`` (cross holds the other heads' files and the OOD files)."""
    tick = progress or (lambda n: None)
    outputs = [_run_file(predictor, f, tick) for f in files]
    heads: dict[str, dict[str, Any]] = {}
    own_scores: dict[str, np.ndarray] = {}
    for f, out in zip(files, outputs, strict=True):
        if f.examples is None:
            continue
        view, o = predictor.heads[f.task], out[f.task]
        if o.probs is not None:
            heads[f.task] = {"data": f.name, **_sentence_metrics(o.probs, f.examples, view)}
            own_scores[f.task] = o.probs.max(axis=1)
        elif o.entities is not None:
            heads[f.task] = {"data": f.name, **_token_metrics(o.entities, o.rows, f.examples, view)}
    cross: dict[str, dict[str, dict[str, float]]] = {}
    for f, out in zip(files, outputs, strict=True):
        for name, view in predictor.heads.items():
            if f.examples is not None and name == f.task:
                continue
            if f.examples is None and f.task not in (name, ANY_HEAD):
                continue  # an OOD file is scored for the head it names (every head: "*")
            o = out[name]
            cell: dict[str, float] = {"examples": len(f.texts), "declined": float(_declined(o, view).mean())}
            if o.probs is not None and name in own_scores:
                cell["auroc"] = auroc(own_scores[name], o.probs.max(axis=1))
                cell["fpr_at_95_tpr"] = fpr_at_tpr(own_scores[name], o.probs.max(axis=1), 0.95)
            key = f.name if f.examples is None else f"{f.task}: {f.name}"
            cross.setdefault(name, {})[key] = cell
    return {
        "heads": heads,
        "cross": cross,
        "thresholds": {n: v.threshold for n, v in predictor.heads.items()},
    }
