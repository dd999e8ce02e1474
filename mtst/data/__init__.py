"""The data layer: examples of a task's splits, read from a :class:`DataSource`.

Torch-free. One :class:`DataSource` describes one split of one task; :func:`load_examples` turns it
into :class:`SentenceExample` or :class:`TokenExample` objects that remember where they came from
(``where`` = ``"path:line"``) so that every later error can point at the row. Token tags come out in
IOB2 whatever the file used. :func:`load_task_data` reads every split of a run config's tasks.

- :mod:`mtst.data.sources`: the example types and :class:`DataSource`;
- :mod:`mtst.data.readers`: one reader per format (CoNLL, CSV/TSV, JSONL, JSON split files, HF datasets).
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mtst.data.readers import hf_examples, iob1_to_iob2, normalize_scheme, read_source
from mtst.data.sources import (
    SENTENCE_FORMATS,
    TOKEN_FORMATS,
    DataFormat,
    DataSource,
    Example,
    SentenceExample,
    TagScheme,
    TokenExample,
    as_sentence,
    as_token,
)
from mtst.errors import ConfigError, DataError, parse_enum
from mtst.tasks import TaskKind, TaskSpec

if TYPE_CHECKING:  # the config imports DataSource from this package: only types from there
    from mtst.config import TaskConfig, TrainConfig

__all__ = [
    "DataFormat",
    "DataSource",
    "Example",
    "SentenceExample",
    "TagScheme",
    "TaskData",
    "TokenExample",
    "check_labels",
    "hf_examples",
    "iob1_to_iob2",
    "label_set",
    "load_examples",
    "load_task_data",
    "load_texts",
    "split_off",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- loading
def load_examples(
    source: DataSource, kind: TaskKind | str, *, data_root: Path | str | None = None
) -> list[Example]:
    """Read every example of ``source`` for a task of ``kind`` (tags in IOB2), then apply ``limit``."""
    kind = parse_enum(TaskKind, kind, "task kind", sep=" ")
    fmt = source.resolved_format
    allowed = TOKEN_FORMATS if kind is TaskKind.TOKEN else SENTENCE_FORMATS
    if fmt not in allowed:
        raise ConfigError(
            f"data {source.path!r}: format {fmt.value!r} cannot hold a {kind.value} task "
            f"(use one of {sorted(f.value for f in allowed)})"
        )
    examples = read_source(source, kind, data_root=data_root)
    if kind is TaskKind.TOKEN:
        examples = normalize_scheme([as_token(ex) for ex in examples], source)
    n = len(examples)
    if source.limit is not None and source.limit < n:
        keep = sorted(random.Random(source.seed).sample(range(n), source.limit))
        examples = [examples[i] for i in keep]
        logger.info(
            "%s: kept %d of %d examples (limit %d, seed %d)",
            source.path,
            len(examples),
            n,
            source.limit,
            source.seed,
        )
    logger.debug("%s: %d %s examples", source.path, len(examples), kind.value)
    return examples


def load_texts(source: DataSource, *, data_root: Path | str | None = None) -> list[str]:
    """The texts of ``source``, labels ignored: a ``lines`` file (one sentence a line), a CoNLL file
    (each sentence's tokens joined by spaces) or any sentence format; then ``limit``."""
    fmt = source.resolved_format
    if fmt is DataFormat.LINES:
        from mtst.runtime.texts import read_sentences

        texts = read_sentences(source.resolve_path(data_root))
        if source.limit is not None and source.limit < len(texts):
            keep = sorted(random.Random(source.seed).sample(range(len(texts)), source.limit))
            texts = [texts[i] for i in keep]
        return texts
    kind = TaskKind.TOKEN if fmt is DataFormat.CONLL else TaskKind.SENTENCE
    return [
        " ".join(ex.tokens) if isinstance(ex, TokenExample) else ex.text
        for ex in load_examples(source, kind, data_root=data_root)
    ]


@dataclass
class TaskData:
    """A task's splits as training reads them: labels from the training split, eval labels checked."""

    config: TaskConfig
    spec: TaskSpec
    train: list[Example]
    validation: list[Example]
    test: list[Example] | None
    label_to_id: dict[str, int] = field(default_factory=dict)
    ood: list[str] = field(default_factory=list)  # the task's own out-of-domain texts (config: ood)


def load_task_data(cfg: TrainConfig) -> dict[str, TaskData]:
    """Every task's splits, label set from the training split, eval labels checked against it."""
    root = cfg.resolved_data_root()
    out: dict[str, TaskData] = {}
    for tc in cfg.tasks:
        train_ex = load_examples(tc.train, tc.kind, data_root=root)
        if tc.validation is not None:
            val_ex = load_examples(tc.validation, tc.kind, data_root=root)
        else:
            train_ex, val_ex = split_off(train_ex, tc.validation_fraction, seed=cfg.seed)
            logger.info("task %s: held out %d of the training examples for validation", tc.name, len(val_ex))
        labels = label_set(train_ex, tc.kind)
        check_labels(val_ex, labels, what=f"the validation data of task {tc.name!r}")
        test_ex = None
        if tc.test is not None:
            test_ex = load_examples(tc.test, tc.kind, data_root=root)
            check_labels(test_ex, labels, what=f"the test data of task {tc.name!r}")
        spec = TaskSpec(tc.name, tc.kind, labels, tc.head)
        ood = load_texts(tc.ood, data_root=root) if tc.ood is not None else []
        out[tc.name] = TaskData(
            tc, spec, train_ex, val_ex, test_ex, {lab: i for i, lab in enumerate(labels)}, ood
        )
        logger.info(
            "task %s (%s): %d train / %d validation / %s test examples, %d labels%s",
            tc.name,
            tc.kind.value,
            len(train_ex),
            len(val_ex),
            len(test_ex) if test_ex is not None else "no",
            len(labels),
            f", {len(ood)} out-of-domain texts" if ood else "",
        )
    return out


# --------------------------------------------------------------------------- labels
def label_set(examples: Sequence[Example], kind: TaskKind | str) -> tuple[str, ...]:
    """Labels in index order, taken from training examples.

    Sentence tasks: sorted label names. Token tasks: ``O``, then ``B-T``, ``I-T`` for every entity
    type ``T`` (sorted), both present even when one never occurs in the split.
    """
    kind = TaskKind(kind)
    if not examples:
        raise DataError("cannot take a label set from an empty list of examples")
    if kind is TaskKind.SENTENCE:
        return tuple(sorted({as_sentence(ex).label for ex in examples}))
    types = {tag[2:] for ex in examples for tag in as_token(ex).tags if tag != "O"}
    return ("O", *(f"{p}-{t}" for t in sorted(types) for p in ("B", "I")))


def check_labels(examples: Sequence[Example], labels: Sequence[str], *, what: str) -> None:
    """Raise DataError at the first example whose label (or tag) is not in the training ``labels``."""
    known = set(labels)
    first: tuple[str, str] | None = None
    unknown: Counter[str] = Counter()
    for ex in examples:
        found = [ex.label] if isinstance(ex, SentenceExample) else list(ex.tags)
        for label in found:
            if label not in known:
                unknown[label] += 1
                if first is None:
                    first = (ex.where, label)
    if first is not None:
        where, label = first
        others = (
            f"; unknown labels in all: {dict(unknown.most_common())}"
            if len(unknown) > 1 or unknown[label] > 1
            else ""
        )
        raise DataError(
            f"{where}: label {label!r} in {what} is not in the training label set {list(labels)}{others}"
        )


def split_off(
    examples: Sequence[Example], fraction: float, *, seed: int
) -> tuple[list[Example], list[Example]]:
    """(rest, held_out): hold out ``fraction`` of the examples, stratified by label for sentence tasks.

    Used for a validation split when a task has none (Banking77). Every label keeps at least one
    training example; both parts keep the input order.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation fraction: expected a value in (0, 1), got {fraction!r}")
    rng = random.Random(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        groups[ex.label if isinstance(ex, SentenceExample) else ""].append(i)
    held: list[int] = []
    for key in sorted(groups):
        idx = groups[key]
        n = min(round(len(idx) * fraction), len(idx) - 1)
        held.extend(rng.sample(idx, n))
    held_set = set(held)
    rest = [ex for i, ex in enumerate(examples) if i not in held_set]
    out = [ex for i, ex in enumerate(examples) if i in held_set]
    if not out:
        raise DataError(
            f"holding out {fraction} of {len(examples)} examples leaves no validation examples; "
            "give a validation file or more data"
        )
    return rest, out
