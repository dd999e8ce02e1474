"""Fixtures of the export tests: a tiny checkpoint on disk (fast), real sentences."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(_tiny_model_base, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny two-task model (intent + ner, hidden 32, 4 attention heads, 2 layers) as a checkpoint."""
    path = tmp_path_factory.mktemp("tiny-ck") / "ck"
    _tiny_model_base.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, bench_corpus: Path) -> Path:
    """A fp32 single-layout bundle of the tiny checkpoint (read-only for tests: copy before changing)."""
    from mtst.export import export_bundle

    out = tmp_path_factory.mktemp("tiny-bundle") / "bundle"
    export_bundle(tiny_checkpoint, out, parity_data=bench_corpus, accuracy_guard=False)
    return out


def _train_head(head, x, y, *, steps: int, lr: float) -> None:
    """Full-batch Adam on frozen features: a quickly trained head (untrained heads flip labels on any noise)."""
    import torch

    head.train()
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y)
        loss.backward()
        opt.step()
    head.eval()


@pytest.fixture(scope="session")
def trained_minilm_checkpoint(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """Real all-MiniLM-L6-v2 (frozen) with a Banking77 intent head and a CoNLL-2003 NER head trained on
    its features (800 / 300 training sentences), saved with a training config whose validation data
    the accuracy guard reads (Banking77: the seeded 10% hold-out; CoNLL-2003: valid.txt)."""
    import torch

    from mtst.alignment import IGNORE_INDEX, encode_token_batch
    from mtst.config import config_from_dict
    from mtst.data import DataSource, label_set, load_examples, split_off
    from mtst.model import MultiTaskModel
    from mtst.tasks import TaskSpec

    torch.manual_seed(0)
    intent_src = {"path": "banking77/train.csv", "label_column": "category"}
    ner_train_src = {"path": "conll2003/train.txt", "limit": 300, "seed": 0}
    config = config_from_dict(
        {
            "run_id": "export-test",
            "seed": 0,
            "max_seq_len": 128,
            "data_root": str(data_root),
            "tasks": [
                {
                    "name": "intent",
                    "kind": "sentence_classification",
                    "train": intent_src,
                    "validation_fraction": 0.1,
                },
                {
                    "name": "ner",
                    "kind": "token_classification",
                    "train": ner_train_src,
                    "validation": {"path": "conll2003/valid.txt"},
                },
            ],
        }
    )
    banking = load_examples(DataSource.from_dict(intent_src), "sentence_classification", data_root=data_root)
    rest, _ = split_off(banking, 0.1, seed=0)
    conll = load_examples(DataSource.from_dict(ner_train_src), "token_classification", data_root=data_root)
    model = MultiTaskModel.from_pretrained(
        None,
        tasks=[
            TaskSpec("intent", "sentence_classification", label_set(banking, "sentence_classification")),
            TaskSpec("ner", "token_classification", label_set(conll, "token_classification")),
        ],
        max_seq_len=128,
    ).eval()
    train = [rest[i] for i in torch.randperm(len(rest), generator=torch.Generator().manual_seed(0))[:800]]
    intent = model.tasks["intent"]
    x = torch.from_numpy(model.encode([ex.text for ex in train], batch_size=64))
    y = torch.tensor([intent.labels.index(ex.label) for ex in train])
    _train_head(model.heads["intent"], x, y, steps=300, lr=1e-2)

    ner = model.tasks["ner"]
    label_to_id = {label: i for i, label in enumerate(ner.labels)}
    feats, targets = [], []
    with torch.inference_mode():
        for start in range(0, len(conll), 32):
            batch, labels, _ = encode_token_batch(
                model.tokenizer, conll[start : start + 32], label_to_id, max_seq_len=128
            )
            states, _ = model.encode_tokens(**{k: torch.from_numpy(v) for k, v in batch.items()})
            keep = torch.from_numpy(labels) != IGNORE_INDEX
            feats.append(states[keep])
            targets.append(torch.from_numpy(labels)[keep])
    _train_head(model.heads["ner"], torch.cat(feats), torch.cat(targets), steps=300, lr=1e-2)

    path = tmp_path_factory.mktemp("minilm-ck") / "ck"
    model.save_pretrained(
        path,
        extra={"config": config.to_dict(), "data_root": str(data_root), "run_id": "export-test", "step": 0},
    )
    return path
