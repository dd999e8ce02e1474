from __future__ import annotations

import numpy as np
import pytest

from mtst.alignment import IGNORE_INDEX
from mtst.data import DataSource, SentenceExample, TokenExample, load_examples
from mtst.errors import ConfigError, DataError
from mtst.evaluation import evaluate_task, selection_score, torch_logits_fn
from mtst.tasks import TaskKind, TaskSpec

INTENT = TaskSpec("intent", "sentence_classification", ["bye", "greet", "thanks"])
NER = TaskSpec("ner", "token_classification", ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"])


def _oracle_sentence_fn(texts_to_label: dict[str, int], tokenizer):
    """Logits that put the gold label first: decodes the batch's ids back to the text."""

    def fn(batch: dict[str, np.ndarray]) -> np.ndarray:
        texts = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
        out = np.zeros((len(texts), 3), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, texts_to_label[t]] = 5.0
        return out

    return fn


def test_sentence_predictions_come_back_in_input_order(tiny_model) -> None:
    tok = tiny_model.tokenizer
    examples = [
        SentenceExample("a much longer sentence about saying goodbye to everyone", "bye", "f:1"),
        SentenceExample("hi", "greet", "f:2"),
        SentenceExample("thanks a lot my friend", "thanks", "f:3"),
        SentenceExample("hello there", "greet", "f:4"),
    ]
    gold = {
        tok.decode(tok(ex.text)["input_ids"], skip_special_tokens=True): INTENT.labels.index(ex.label)
        for ex in examples
    }
    result = evaluate_task(
        _oracle_sentence_fn(gold, tok), tok, INTENT, examples, max_seq_len=32, batch_size=3
    )
    assert result.predictions == ["bye", "greet", "thanks", "greet"]
    assert result.metrics == {"accuracy": 1.0, "macro_f1": 1.0}


def test_token_predictions_map_back_to_original_tokens(tiny_model) -> None:
    tok = tiny_model.tokenizer
    examples = [
        TokenExample(("Anna", "flew", "to", "U.S.", "today"), ("B-PER", "O", "O", "B-LOC", "O"), "f:1"),
        TokenExample(("Bob",), ("B-PER",), "f:2"),
    ]
    from mtst.alignment import encode_token_batch

    label_to_id = {lab: i for i, lab in enumerate(NER.labels)}

    def oracle(batch: dict[str, np.ndarray]) -> np.ndarray:
        # the labels the alignment gives each first sub-token, as one-hot logits
        b, t = batch["input_ids"].shape
        ids = [tuple(row[row != 0]) for row in batch["input_ids"]]
        by_ids = {}
        for ex in examples:
            enc, labels, _ = encode_token_batch(tok, [ex], label_to_id, max_seq_len=32)
            by_ids[tuple(enc["input_ids"][0])] = labels[0]
        out = np.zeros((b, t, len(NER.labels)), dtype=np.float32)
        for i, key in enumerate(ids):
            for pos, lab in enumerate(by_ids[key]):
                out[i, pos, lab if lab != IGNORE_INDEX else 0] = 1.0
        return out

    result = evaluate_task(oracle, tok, NER, examples, max_seq_len=32, batch_size=1)
    assert result.predictions == [["B-PER", "O", "O", "B-LOC", "O"], ["B-PER"]]
    assert result.metrics["f1"] == 1.0 and result.metrics["f1_PER"] == 1.0


def test_torch_logits_fn_scores_the_model(tiny_model, tiny_data) -> None:
    tiny_model.eval()
    sents = load_examples(DataSource("ner_valid.txt"), TaskKind.TOKEN, data_root=tiny_data)
    spec = tiny_model.tasks["ner"]
    a = evaluate_task(
        torch_logits_fn(tiny_model, "ner"), tiny_model.tokenizer, spec, sents, max_seq_len=64, batch_size=5
    )
    b = evaluate_task(
        torch_logits_fn(tiny_model, "ner"), tiny_model.tokenizer, spec, sents, max_seq_len=64, batch_size=64
    )
    assert a.predictions == b.predictions  # batching and length sorting do not change answers
    assert len(a.predictions) == len(sents) and all(
        len(p) == len(s.tokens) for p, s in zip(a.predictions, sents, strict=True)
    )
    assert set(a.metrics) >= {"precision", "recall", "f1"} and 0.0 <= a.metrics["f1"] <= 1.0


def test_errors_name_the_example_and_the_shape(tiny_model) -> None:
    tok = tiny_model.tokenizer
    with pytest.raises(
        DataError,
        match=r"f:7: label 'hello' in evaluation data of task 'intent' is not in the training label set",
    ):
        evaluate_task(
            lambda b: np.zeros((1, 3)), tok, INTENT, [SentenceExample("x", "hello", "f:7")], max_seq_len=16
        )
    with pytest.raises(
        ConfigError, match=r"task 'intent': the logits function returned shape \(1, 2\), expected \(1, 3\)"
    ):
        evaluate_task(
            lambda b: np.zeros((1, 2)), tok, INTENT, [SentenceExample("x", "bye", "f:1")], max_seq_len=16
        )
    with pytest.raises(DataError, match=r"task 'intent': no examples to evaluate"):
        evaluate_task(lambda b: np.zeros((1, 3)), tok, INTENT, [], max_seq_len=16)


def test_selection_score() -> None:
    metrics = {"intent": {"accuracy": 0.8, "macro_f1": 0.7}, "ner": {"f1": 0.6, "precision": 0.5}}
    kinds = {"intent": TaskKind.SENTENCE, "ner": TaskKind.TOKEN}
    assert selection_score(metrics, kinds, "mean") == pytest.approx(0.7)
    assert selection_score(metrics, kinds, "ner.f1") == 0.6
    assert selection_score(metrics, kinds, "intent.macro_f1") == 0.7
    with pytest.raises(
        ConfigError,
        match=r"eval.metric 'ner.f2': task 'ner' has no metric 'f2'; it has \['f1', 'precision'\]",
    ):
        selection_score(metrics, kinds, "ner.f2")
