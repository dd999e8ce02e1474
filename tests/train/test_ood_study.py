"""The OOD study (mtst.experiment.ood_study) on separable synthetic embeddings: the scores tell a head's own
sentences from others, and the three "not mine" losses train and are compared."""

from __future__ import annotations

import numpy as np
import pytest

from mtst.experiment.ood_study import Features, loss_study, score_study


def _cluster(rng: np.random.Generator, center: np.ndarray, n: int, labels: list[str] | None) -> Features:
    x = center + 0.3 * rng.normal(size=(n, len(center)))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return Features(x.astype(np.float32), {}, labels)


def _feats(seed: int = 0) -> dict[str, dict[str, Features]]:
    """Two 'tasks' in opposite corners of a 32-d space; intent's labels split its cluster in two."""
    rng = np.random.default_rng(seed)
    a, b = np.zeros(32), np.zeros(32)
    a[0], b[1] = 1.0, 1.0
    out: dict[str, dict[str, Features]] = {}
    for name, center in (("intent", a), ("other", b)):
        out[name] = {}
        for split, n in (("train", 200), ("validation", 80), ("test", 80)):
            labels = ["greet" if i % 2 else "bye" for i in range(n)] if name == "intent" else None
            f = _cluster(rng, center, n, labels)
            if labels is not None:  # make the labels learnable: shift one half along a third axis
                shift = np.where(np.array(labels) == "greet", 0.8, -0.8)[:, None] * np.eye(32)[2]
                e = f.embeddings + shift.astype(np.float32)
                f = Features(e / np.linalg.norm(e, axis=1, keepdims=True), {}, labels)
            out[name][split] = f
    return out


def test_loss_study_compares_three_losses() -> None:
    rows = loss_study(_feats(), ["intent"])["intent"]
    assert set(rows) == {"ce", "oe", "none"}
    for r in rows.values():
        assert r["accuracy"] > 0.9
        assert 0.0 <= r["declined_other_tasks"] <= 1.0
    # the other task's cluster is far away: exposure to it (oe, none) makes it easy to decline
    assert rows["oe"]["auroc_other_tasks"] > 0.9 and rows["none"]["auroc_other_tasks"] > 0.9


def test_score_study_on_a_real_head(tiny_model) -> None:
    """Embedding distances separate the clusters whatever the (untrained) head's logits say."""
    import torch

    feats = _feats(1)
    with torch.inference_mode():  # the tiny model's intent head on the synthetic embeddings
        for splits in feats.values():
            for split, f in splits.items():
                logits = tiny_model.heads["intent"](torch.from_numpy(f.embeddings)).numpy()
                splits[split] = Features(f.embeddings, {"intent": logits}, f.labels)
    out = score_study(tiny_model, feats)["intent"]
    assert set(out) == {"other", "mean"}
    assert set(out["other"]) == {"max_prob", "energy", "knn", "centroid"}
    assert out["other"]["knn"] > 0.95 and out["other"]["centroid"] > 0.95
    assert out["mean"]["knn"] == pytest.approx(out["other"]["knn"])
