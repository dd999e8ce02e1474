from __future__ import annotations

import numpy as np
import pytest
import torch

from mtst.errors import CheckpointError, ConfigError
from mtst.model import MultiTaskModel
from mtst.pooling import Pooling
from mtst.tasks import TaskSpec


def test_forward_returns_embedding_and_every_head(tiny_model) -> None:
    tiny_model.eval()
    batch = tiny_model.tokenize(["hello there", "Anna lives in Berlin now"])
    out = tiny_model(**batch)
    assert out.embedding.shape == (2, 32)
    torch.testing.assert_close(out.embedding.norm(dim=-1), torch.ones(2))
    assert out.logits["intent"].shape == (2, 3)
    assert out.logits["ner"].shape == (2, batch["input_ids"].shape[1], 5)


@pytest.mark.parametrize("pooling", list(Pooling))
def test_encode_is_fixed_length_normalized_and_in_input_order(tiny_encoder_dir, pooling) -> None:
    model = MultiTaskModel.from_pretrained(tiny_encoder_dir, pooling=pooling)
    texts = ["a much longer sentence than the others, with commas", "short", "medium length one"]
    emb = model.encode(texts, batch_size=2)
    assert emb.shape == (3, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    one_by_one = np.concatenate([model.encode([t]) for t in texts])
    np.testing.assert_allclose(emb, one_by_one, atol=1e-5)


def test_padding_does_not_change_mean_and_max_pooling(tiny_encoder_dir) -> None:
    for pooling in ("mean", "max"):
        model = MultiTaskModel.from_pretrained(tiny_encoder_dir, pooling=pooling)
        alone = model.encode(["tiny"])
        padded = model.encode(["tiny", "a sentence that forces padding of the short one"], batch_size=2)[:1]
        np.testing.assert_allclose(alone, padded, atol=1e-5)


def test_checkpoint_round_trip_is_exact(tiny_model, tmp_path) -> None:
    tiny_model.eval()
    tiny_model.save_pretrained(tmp_path / "ck")
    again = MultiTaskModel.from_pretrained(tmp_path / "ck")
    assert list(again.tasks) == ["intent", "ner"] and again.max_seq_len == 64
    batch = tiny_model.tokenize(["Anna lives in Berlin"])
    a, b = tiny_model(**batch), again(**batch)
    assert torch.equal(a.embedding, b.embedding)
    for name in a.logits:
        assert torch.equal(a.logits[name], b.logits[name])


def test_checkpoint_adds_new_task_but_refuses_conflicting_labels(tiny_model, tmp_path) -> None:
    tiny_model.save_pretrained(tmp_path / "ck")
    more = MultiTaskModel.from_pretrained(
        tmp_path / "ck", tasks=[TaskSpec("sentiment", "sentence_classification", ["neg", "pos"])]
    )
    assert list(more.tasks) == ["intent", "ner", "sentiment"]
    with pytest.raises(ConfigError, match=r"task 'intent': already present"):
        MultiTaskModel.from_pretrained(
            tmp_path / "ck", tasks=[TaskSpec("intent", "sentence_classification", ["x", "y"])]
        )


def test_incomplete_checkpoint_is_refused(tiny_model, tmp_path) -> None:
    tiny_model.save_pretrained(tmp_path / "ck")
    (tmp_path / "ck" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"checkpoint is incomplete \(model.safetensors is missing\)"):
        MultiTaskModel.from_pretrained(tmp_path / "ck")


def test_bad_task_specs_name_the_field() -> None:
    with pytest.raises(ConfigError, match="kind 'regression' is not one of"):
        TaskSpec("x", "regression", ["a", "b"])
    with pytest.raises(ConfigError, match="reserved"):
        TaskSpec("embedding", "sentence_classification", ["a", "b"])
    with pytest.raises(ConfigError, match="needs the outside label 'O'"):
        TaskSpec("ner", "token_classification", ["B-PER", "I-PER"])
    with pytest.raises(ConfigError, match="duplicate labels"):
        TaskSpec("x", "sentence_classification", ["a", "a", "b"])


@pytest.mark.slow
def test_minilm_embeddings_match_sentence_transformers(minilm_path) -> None:
    """The default backbone with mean pooling reproduces all-MiniLM-L6-v2's published embeddings."""
    from sentence_transformers import SentenceTransformer

    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."]
    ours = MultiTaskModel.from_pretrained().encode(texts)
    ref = SentenceTransformer(str(minilm_path), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose((ours * ref).sum(1), 1.0, atol=1e-5)
    sims = ours @ ours.T
    assert sims[0, 1] > 0.7 > 0.1 > sims[0, 2]
