"""Which out-of-domain score, and which "not mine" loss: the measurements behind the choices of issue 13.

1. **Scores** (:func:`score_study`): for each sentence head of a checkpoint, AUROC of telling its own
   test sentences from every other task's test sentences (and OOD files) with
   - ``max_prob``: the calibrated top probability (what the bundle contract thresholds);
   - ``energy``: ``T * logsumexp(logits / T)`` (Liu et al. 2020);
   - ``knn``: cosine similarity of the embedding to its nearest training embedding of the task (the
     frozen-backbone cache holds these; Sun et al. 2022 use k-th nearest neighbours the same way);
   - ``centroid``: cosine similarity to the nearest class centroid of the task's training embeddings.
2. **Losses** (:func:`loss_study`): sentence heads trained on the same frozen embeddings three ways,
   plain cross-entropy, cross-entropy + outlier exposure (uniform answers on the other tasks' training
   sentences, weight 0.5) and an extra ``none`` class for those sentences; then in-domain test
   accuracy, AUROC and the share of other tasks' test sentences declined at a threshold chosen for
   98% validation coverage (``none``: its score is 1 - p(none), answers over the real labels).

Torch is imported inside the functions (the experiment part imports torch only where it trains).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mtst.calibration import auroc, choose_threshold, energy, scaled_softmax
from mtst.data import SentenceExample, TaskData, TokenExample

__all__ = ["Features", "encode_tasks", "encode_texts", "loss_study", "score_study"]

logger = logging.getLogger(__name__)


def _texts(examples: Sequence[Any]) -> list[str]:
    return [" ".join(ex.tokens) if isinstance(ex, TokenExample) else ex.text for ex in examples]


@dataclass(frozen=True)
class Features:
    """Embeddings (N, H) and the sentence heads' logits of one split of one task."""

    embeddings: np.ndarray
    logits: dict[str, np.ndarray]  # sentence head -> (N, L)
    labels: list[str] | None  # sentence tasks: gold labels


def encode_texts(model: Any, texts: Sequence[str], *, batch_size: int = 64) -> Features:
    """Embeddings and every sentence head's logits of ``texts`` (no labels)."""
    import torch

    heads = [n for n, t in model.tasks.items() if t.kind.value == "sentence_classification"]
    emb = model.encode(list(texts), batch_size=batch_size)
    with torch.inference_mode():
        x = torch.from_numpy(emb)
        logits = {h: model.heads[h](x).float().numpy() for h in heads}
    return Features(emb, logits, None)


def encode_tasks(
    model: Any, data: Mapping[str, TaskData], *, limit: int = 5000, batch_size: int = 64
) -> dict[str, dict[str, Features]]:
    """``{task: {"train"|"validation"|"test": Features}}`` with the model's embeddings and every sentence
    head's logits (each split: at most ``limit`` sentences, a seeded sample)."""
    out: dict[str, dict[str, Features]] = {}
    rng = np.random.default_rng(0)
    for name, d in data.items():
        out[name] = {}
        for split, examples in {"train": d.train, "validation": d.validation, "test": d.test or []}.items():
            if len(examples) > limit:
                examples = [
                    examples[int(i)] for i in np.sort(rng.choice(len(examples), limit, replace=False))
                ]
            if not examples:
                continue
            f = encode_texts(model, _texts(examples), batch_size=batch_size)
            labels = [ex.label for ex in examples if isinstance(ex, SentenceExample)] or None
            out[name][split] = Features(f.embeddings, f.logits, labels)
            logger.info("encoded %s/%s: %d sentences", name, split, len(examples))
    return out


def _scores(
    head: str, spec: Any, feats: Features, train: Features, centroids: np.ndarray
) -> dict[str, np.ndarray]:
    z = feats.logits[head]
    sims = feats.embeddings @ train.embeddings.T  # (N, M) cosine: embeddings are unit length
    return {
        "max_prob": scaled_softmax(z, spec.temperature).max(axis=1),
        "energy": energy(z, spec.temperature),
        "knn": sims.max(axis=1),
        "centroid": (feats.embeddings @ centroids.T).max(axis=1),
    }


def _centroids(train: Features) -> np.ndarray:
    assert train.labels is not None
    labels = np.array(train.labels)
    cs = np.stack([train.embeddings[labels == c].mean(axis=0) for c in sorted(set(train.labels))])
    return cs / np.linalg.norm(cs, axis=1, keepdims=True)


def score_study(
    model: Any, feats: Mapping[str, Mapping[str, Features]], ood: Mapping[str, Features] | None = None
) -> dict[str, Any]:
    """AUROC per sentence head, score and other dataset (own test vs each other task's test / OOD file)."""
    out: dict[str, Any] = {}
    for head, spec in model.tasks.items():
        if spec.kind.value != "sentence_classification" or "test" not in feats[head]:
            continue
        train = feats[head]["train"]
        cents = _centroids(train)
        own = _scores(head, spec, feats[head]["test"], train, cents)
        others = {t: f["test"] for t, f in feats.items() if t != head and "test" in f}
        others.update({f"ood:{k}": v for k, v in (ood or {}).items()})
        table: dict[str, dict[str, float]] = {}
        for other, f in others.items():
            theirs = _scores(head, spec, f, train, cents)
            table[other] = {s: auroc(own[s], theirs[s]) for s in own}
        table["mean"] = {s: float(np.mean([row[s] for row in table.values()])) for s in own}
        out[head] = table
    return out


def _train_head(
    x: Any, y: Any, n_out: int, outliers: Any, mode: str, *, steps: int = 400, seed: int = 0
) -> Any:
    """A SentenceHead-shaped head (input scale, dropout, linear) on frozen embeddings, full-batch Adam."""
    import torch

    from mtst.heads import SentenceHead
    from mtst.tasks import HeadConfig

    torch.manual_seed(seed)
    head = SentenceHead(x.shape[1], n_out + (1 if mode == "none" else 0), HeadConfig())
    opt = torch.optim.Adam(head.parameters(), lr=2e-3)
    for _ in range(steps):
        head.train()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y)
        if mode == "oe":
            z = head(outliers)
            loss = loss + 0.5 * (torch.logsumexp(z, dim=-1) - z.mean(dim=-1)).mean()
        elif mode == "none":
            target = torch.full((len(outliers),), n_out, dtype=torch.long)
            loss = loss + torch.nn.functional.cross_entropy(head(outliers), target)
        loss.backward()
        opt.step()
    return head.eval()


def loss_study(feats: Mapping[str, Mapping[str, Features]], sentence_tasks: Sequence[str]) -> dict[str, Any]:
    """Plain CE vs outlier exposure vs a ``none`` class, heads on the same frozen embeddings."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny steps: thread hand-offs cost more than they save
    try:
        return _loss_study(feats, sentence_tasks)
    finally:
        torch.set_num_threads(threads)


def _loss_study(feats: Mapping[str, Mapping[str, Features]], sentence_tasks: Sequence[str]) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    for head in sentence_tasks:
        f = feats[head]
        assert (
            f["train"].labels is not None
            and f["test"].labels is not None
            and f["validation"].labels is not None
        )
        # every label of the task's splits (a sample of train may miss a few; those count as wrong answers)
        labels = sorted(set(f["train"].labels) | set(f["validation"].labels) | set(f["test"].labels))
        ids = {lab: i for i, lab in enumerate(labels)}
        x = torch.from_numpy(f["train"].embeddings)
        y = torch.tensor([ids[lab] for lab in f["train"].labels])
        outliers = torch.from_numpy(
            np.concatenate([g["train"].embeddings for t, g in feats.items() if t != head])
        )
        others = {t: g["test"].embeddings for t, g in feats.items() if t != head and "test" in g}
        rows: dict[str, dict[str, float]] = {}
        for mode in ("ce", "oe", "none"):
            net = _train_head(x, y, len(labels), outliers, mode)

            def score(emb: np.ndarray, net: Any = net, mode: str = mode) -> tuple[np.ndarray, np.ndarray]:
                with torch.inference_mode():
                    p = torch.softmax(net(torch.from_numpy(emb)), dim=-1).numpy()
                if mode == "none":  # answer over the real labels; confidence = 1 - p(none)
                    return 1.0 - p[:, -1], p[:, :-1].argmax(axis=1)
                return p.max(axis=1), p.argmax(axis=1)

            val_s, val_pred = score(f["validation"].embeddings)
            val_gold = np.array([ids[lab] for lab in f["validation"].labels])
            thr = choose_threshold(val_s, val_pred == val_gold, "coverage", 0.98)
            test_s, test_pred = score(f["test"].embeddings)
            gold = np.array([ids[lab] for lab in f["test"].labels])
            row = {"accuracy": float((test_pred == gold).mean()), "threshold": thr}
            declined, aucs = [], []
            for emb in others.values():
                s, _ = score(emb)
                declined.append(float((s < thr).mean()))
                aucs.append(auroc(test_s, s))
            row["declined_other_tasks"] = float(np.mean(declined))
            row["auroc_other_tasks"] = float(np.mean(aucs))
            rows[mode] = row
        out[head] = rows
    return out
