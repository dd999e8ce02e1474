"""mtst.data: sources, readers (CoNLL, CSV/TSV, JSONL, JSON, HF), label sets, label checks, split_off."""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from pathlib import Path

import pytest

from mtst.data import (
    DataFormat,
    DataSource,
    SentenceExample,
    TagScheme,
    TokenExample,
    check_labels,
    hf_examples,
    iob1_to_iob2,
    label_set,
    load_examples,
    split_off,
)
from mtst.errors import ConfigError, DataError, MissingExtraError
from mtst.runtime.decode import bio_spans
from mtst.tasks import TaskKind

SENT = TaskKind.SENTENCE
TOK = TaskKind.TOKEN

IOB2_CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O
"""

# the original shared-task layout: IOB1, B- only between two adjacent entities of one type
IOB1_CONLL = """-DOCSTART- -X- O O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
, , O O
Smith NNP I-NP I-PER
Jones NNP I-NP B-PER
"""


def write(path: Path, text: str, *, newline: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline=newline) as fh:
        fh.write(text)
    return path


# --------------------------------------------------------------------------- DataSource
def test_source_defaults_and_round_trip():
    src = DataSource(
        "clinc150/data_full.json",
        split="train",
        extra_splits=["oos_train"],  # a list from YAML becomes a tuple
        label_map={0: "negative", 1: "positive"},  # YAML int keys become strings
        limit=10,
        seed=3,
    )
    assert src.extra_splits == ("oos_train",)
    assert src.label_map == {"0": "negative", "1": "positive"}
    assert src.format is DataFormat.AUTO and src.resolved_format is DataFormat.JSON
    d = src.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert DataSource.from_dict(d) == src
    assert DataSource.from_dict("conll2003/train.txt") == DataSource("conll2003/train.txt")
    assert hash(src) == hash(DataSource.from_dict(d))  # usable as a dict key despite label_map


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("a/train.txt", DataFormat.CONLL),
        ("a/train.conll", DataFormat.CONLL),
        ("a/train.CSV", DataFormat.CSV),
        ("a/dev.tsv", DataFormat.TSV),
        ("a/x.jsonl", DataFormat.JSONL),
        ("a/x.json", DataFormat.JSON),
    ],
)
def test_format_from_suffix(path, fmt):
    assert DataSource(path).resolved_format is fmt


def test_hf_source():
    src = DataSource("hf:glue:sst2", split="validation")
    assert src.resolved_format is DataFormat.HF
    with pytest.raises(
        ConfigError, match=r"data 'hf:conll2003': split: a Hugging Face dataset needs a split name"
    ):
        DataSource("hf:conll2003")
    with pytest.raises(ConfigError, match=r"expected 'hf:NAME' or 'hf:NAME:CONFIG'"):
        DataSource("hf:a:b:c", split="train")
    with pytest.raises(ConfigError, match=r"an 'hf:' path is a Hugging Face dataset, not 'csv'"):
        DataSource("hf:x", format="csv", split="train")
    with pytest.raises(ConfigError, match=r"format 'hf' needs a path of the form 'hf:NAME\[:CONFIG\]'"):
        DataSource("x.csv", format="hf", split="train")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": ""}, r"data path: expected a file path or 'hf:NAME', got ''"),
        ({"path": "x.csv", "format": "xml"}, r"data 'x.csv': format 'xml' is not one of \['auto', 'conll'"),
        ({"path": "x.parquet"}, r"data 'x.parquet': cannot tell the format from the suffix '.parquet'"),
        (
            {"path": "x.json", "extra_splits": ["b"]},
            r"data 'x.json': extra_splits \['b'\] need a split to extend",
        ),
        (
            {"path": "x.json", "split": "a", "extra_splits": "b"},
            r"extra_splits: expected a list of names, got the string 'b'",
        ),
        (
            {"path": "x.csv", "text_column": -1},
            r"data 'x.csv': text_column: a column index must be >= 0, got -1",
        ),
        (
            {"path": "x.csv", "label_column": True},
            r"label_column: expected a column name or a 0-based column index, got True",
        ),
        (
            {"path": "x.csv", "header": False},
            r"data 'x.csv': text_column 'text' is a name but header is false; give a 0-based column index",
        ),
        ({"path": "x.txt", "tag_column": 0}, r"tag_column: column 0 holds the token, not the tag"),
        (
            {"path": "x.txt", "scheme": "bioes"},
            r"data 'x.txt': scheme 'bioes' is not one of \['auto', 'iob1', 'iob2'\]",
        ),
        ({"path": "x.csv", "limit": 0}, r"data 'x.csv': limit: expected a positive integer or null, got 0"),
        ({"path": "x.csv", "label_map": ["a"]}, r"data 'x.csv': label_map: expected a mapping, got \['a'\]"),
    ],
)
def test_source_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DataSource(**kwargs)


def test_from_dict_errors():
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['colum'\]; known: \["):
        DataSource.from_dict({"path": "x.csv", "colum": "text"})
    with pytest.raises(ConfigError, match=r"missing field 'path'"):
        DataSource.from_dict({"split": "train"})


def test_missing_file_names_resolved_path_and_root(tmp_path):
    with pytest.raises(DataError) as err:
        load_examples(DataSource("nope/train.csv"), SENT, data_root=tmp_path)
    assert str(err.value) == (
        f"data file 'nope/train.csv' not found: looked for {tmp_path / 'nope/train.csv'} "
        f"(data_root {str(tmp_path)!r})"
    )


def test_absolute_path_ignores_data_root(tmp_path):
    f = write(tmp_path / "a.csv", "text,label\nhello there,greet\n")
    ex = load_examples(DataSource(str(f)), SENT, data_root="/nonexistent")
    assert ex == [SentenceExample("hello there", "greet")]


def test_format_must_fit_the_task(tmp_path):
    write(tmp_path / "a.csv", "text,label\nhi,greet\n")
    with pytest.raises(ConfigError, match=r"format 'csv' cannot hold a token_classification task"):
        load_examples(DataSource("a.csv"), TOK, data_root=tmp_path)
    with pytest.raises(ConfigError, match=r"format 'conll' cannot hold a sentence_classification task"):
        load_examples(DataSource("a.txt"), SENT, data_root=tmp_path)


# --------------------------------------------------------------------------- CoNLL
def test_conll_iob2(tmp_path, caplog):
    f = write(tmp_path / "ner" / "train.txt", IOB2_CONLL)
    with caplog.at_level(logging.DEBUG, logger="mtst.data"):
        ex = load_examples(DataSource("ner/train.txt"), TOK, data_root=tmp_path)
    assert ex == [
        TokenExample(("EU", "rejects", "German", "call", "."), ("B-ORG", "O", "B-MISC", "O", "O")),
        TokenExample(("Peter", "Blackburn"), ("B-PER", "I-PER")),
        TokenExample(("BRUSSELS", "1996-08-22"), ("B-LOC", "O")),
    ]
    assert [e.where for e in ex] == [f"{f}:3", f"{f}:9", f"{f}:14"]
    assert "skipped 2 -DOCSTART- lines" in caplog.text


def test_conll_tag_column_picks_another_column(tmp_path):
    write(tmp_path / "t.txt", IOB2_CONLL)
    ex = load_examples(DataSource("t.txt", tag_column=2), TOK, data_root=tmp_path)  # the chunk column
    assert ex[0].tags == ("B-NP", "B-VP", "B-NP", "I-NP", "O")


def test_conll_iob1_is_converted(tmp_path):
    write(tmp_path / "eng.train", IOB1_CONLL)
    src = DataSource("eng.train", format="conll")
    ex = load_examples(src, TOK, data_root=tmp_path)
    assert ex[0].tags == ("B-ORG", "O", "B-MISC", "O", "O")
    # "Smith Jones": IOB1 I-PER B-PER = two adjacent persons
    assert ex[1].tags == ("B-PER", "I-PER", "O", "B-PER", "B-PER")
    assert (
        load_examples(DataSource("eng.train", format="conll", scheme="iob1"), TOK, data_root=tmp_path) == ex
    )
    with pytest.raises(DataError) as err:
        load_examples(DataSource("eng.train", format="conll", scheme="iob2"), TOK, data_root=tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'eng.train'}:3: tag 'I-ORG' at token 0 starts an entity, which IOB2 does not allow; "
        "the data looks like IOB1 (set scheme: iob1 or auto)"
    )


def test_conll_mixed_scheme_cannot_be_read(tmp_path):
    f = write(tmp_path / "mixed.txt", "A x I-PER\nB x O\n\nC x B-LOC\n")
    with pytest.raises(DataError) as err:
        load_examples(DataSource("mixed.txt"), TOK, data_root=tmp_path)
    assert str(err.value) == (
        f"mixed.txt: cannot read the tagging scheme: {f}:1 token 0 has 'I-PER' starting an entity (IOB1) "
        f"but {f}:4 token 0 has 'B-LOC' starting an entity (IOB2); set scheme: iob1 or iob2"
    )
    # an explicit scheme decides
    ex = load_examples(DataSource("mixed.txt", scheme="iob1"), TOK, data_root=tmp_path)
    assert [e.tags for e in ex] == [("B-PER", "O"), ("B-LOC",)]


def test_iob1_to_iob2():
    assert iob1_to_iob2(["I-PER", "I-PER", "I-LOC", "O", "I-LOC", "B-LOC"]) == (
        "B-PER",
        "I-PER",
        "B-LOC",
        "O",
        "B-LOC",
        "B-LOC",
    )
    assert iob1_to_iob2(["B-PER", "I-PER", "O"]) == ("B-PER", "I-PER", "O")  # IOB2 stays as it is


def test_conll_malformed_line(tmp_path):
    f = write(tmp_path / "bad.txt", "EU NNP B-NP B-ORG\nrejects\n")
    with pytest.raises(DataError) as err:
        load_examples(DataSource("bad.txt"), TOK, data_root=tmp_path)
    assert str(err.value) == (
        f"{f}:2: malformed CoNLL line 'rejects': expected a token and a tag separated by whitespace"
    )


def test_conll_tag_column_out_of_range(tmp_path):
    f = write(tmp_path / "t.txt", "EU B-ORG\n")
    with pytest.raises(
        DataError, match=rf"{f}:1: malformed CoNLL line 'EU B-ORG': it has 2 columns, tag_column is 3"
    ):
        load_examples(DataSource("t.txt", tag_column=3), TOK, data_root=tmp_path)


def test_conll_bad_tag(tmp_path):
    f = write(tmp_path / "t.txt", "EU NNP\n")  # the tag column is the POS tag: not a BIO tag
    with pytest.raises(DataError, match=rf"{f}:1: tag 'NNP' is not 'O', 'B-TYPE' or 'I-TYPE'"):
        load_examples(DataSource("t.txt"), TOK, data_root=tmp_path)


def test_empty_files(tmp_path):
    f = write(tmp_path / "e.txt", "")
    with pytest.raises(DataError, match=rf"^{f}: the file is empty$"):
        load_examples(DataSource("e.txt"), TOK, data_root=tmp_path)
    g = write(tmp_path / "d.txt", "-DOCSTART- -X- -X- O\n\n\n")
    with pytest.raises(DataError, match=rf"^{g}: no examples in the file"):
        load_examples(DataSource("d.txt"), TOK, data_root=tmp_path)
    h = write(tmp_path / "h.csv", "text,label\n")
    with pytest.raises(DataError, match=rf"^{h}: no examples in the file"):
        load_examples(DataSource("h.csv"), SENT, data_root=tmp_path)


# --------------------------------------------------------------------------- CSV / TSV
def test_csv_quoted_newlines_crlf_and_strip(tmp_path):
    text = 'text,category\r\nI am still waiting on my card?,card_arrival\r\n"\nHow do I unblock my PIN?",pin_blocked\r\n"a, b ""c""",x\r\n'
    f = write(tmp_path / "b.csv", text, newline="")
    ex = load_examples(DataSource("b.csv", label_column="category"), SENT, data_root=tmp_path)
    assert ex == [
        SentenceExample("I am still waiting on my card?", "card_arrival"),
        SentenceExample("How do I unblock my PIN?", "pin_blocked"),
        SentenceExample('a, b "c"', "x"),
    ]
    assert [e.where for e in ex] == [f"{f}:2", f"{f}:3", f"{f}:5"]  # the record after a 2-line one


def test_csv_headerless_index_columns_and_label_map(tmp_path):
    write(tmp_path / "ag.csv", '"3","Wall St. Bears","Short-sellers are back."\n"1","Title","Desc"\n')
    src = DataSource(
        "ag.csv", header=False, text_column=2, label_column=0, label_map={"1": "World", "3": "Business"}
    )
    ex = load_examples(src, SENT, data_root=tmp_path)
    assert ex == [SentenceExample("Short-sellers are back.", "Business"), SentenceExample("Desc", "World")]


def test_csv_missing_column(tmp_path):
    f = write(tmp_path / "b.csv", "text,category\nhi,greet\n")
    with pytest.raises(DataError) as err:
        load_examples(DataSource("b.csv"), SENT, data_root=tmp_path)
    assert (
        str(err.value)
        == f"{f}: column 'label' (label_column) not found; the header has columns ['text', 'category']"
    )
    with pytest.raises(
        DataError, match=rf"^{f}: text_column 5 is out of range: the file has columns \['text', 'category'\]$"
    ):
        load_examples(DataSource("b.csv", text_column=5), SENT, data_root=tmp_path)


def test_csv_ragged_row_and_empty_text(tmp_path):
    f = write(tmp_path / "b.csv", "text,label\nhi,greet\nbye,bye,extra\n")
    with pytest.raises(DataError) as err:
        load_examples(DataSource("b.csv"), SENT, data_root=tmp_path)
    assert str(err.value) == f"{f}:3: row has 3 fields, the header has 2: ['bye', 'bye', 'extra']"
    g = write(tmp_path / "c.csv", "text,label\nhi,greet\n  ,bye\n")
    with pytest.raises(DataError, match=rf"^{g}:3: empty text in column 'text'$"):
        load_examples(DataSource("c.csv"), SENT, data_root=tmp_path)
    h = write(tmp_path / "d.csv", "text,label\nhi,\n")
    with pytest.raises(DataError, match=rf"^{h}:2: empty label$"):
        load_examples(DataSource("d.csv"), SENT, data_root=tmp_path)


def test_csv_unclosed_quote_and_bad_encoding(tmp_path):
    f = write(tmp_path / "q.csv", 'text,label\nhi,greet\n"unclosed, bye\nmore,rows\n')
    with pytest.raises(DataError, match=rf"^{f}:4: cannot parse the row as CSV \(unexpected end of data\)$"):
        load_examples(DataSource("q.csv"), SENT, data_root=tmp_path)
    g = tmp_path / "latin1.csv"
    g.write_bytes("text,label\ncaf\u00e9,x\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"^{g}: not UTF-8 text \(invalid continuation byte at byte 14"):
        load_examples(DataSource("latin1.csv"), SENT, data_root=tmp_path)


def test_csv_blank_lines_are_counted(tmp_path, caplog):
    write(tmp_path / "b.csv", "text,label\nhi,greet\n\nbye,bye\n\n")
    with caplog.at_level(logging.DEBUG, logger="mtst.data"):
        ex = load_examples(DataSource("b.csv"), SENT, data_root=tmp_path)
    assert [e.label for e in ex] == ["greet", "bye"]
    assert "skipped 2 blank lines" in caplog.text


def test_tsv_has_no_quoting(tmp_path):
    # SST-2: quotes are text, the sentence ends with a space before the tab
    write(tmp_path / "dev.tsv", 'sentence\tlabel\n"it \'s a charming " journey . \t1\nbad , bad . \t0\n')
    src = DataSource("dev.tsv", text_column="sentence", label_map={"0": "negative", "1": "positive"})
    ex = load_examples(src, SENT, data_root=tmp_path)
    assert ex == [
        SentenceExample('"it \'s a charming " journey .', "positive"),
        SentenceExample("bad , bad .", "negative"),
    ]


# --------------------------------------------------------------------------- JSONL / JSON
def test_jsonl_sentences(tmp_path):
    f = write(tmp_path / "x.jsonl", '{"text": "hi", "label": "greet"}\n\n{"text": "bye", "label": 2}\n')
    ex = load_examples(DataSource("x.jsonl"), SENT, data_root=tmp_path)
    assert ex == [SentenceExample("hi", "greet"), SentenceExample("bye", "2")]
    assert [e.where for e in ex] == [f"{f}:1", f"{f}:3"]


def test_jsonl_errors(tmp_path):
    f = write(tmp_path / "x.jsonl", '{"text": "hi", "label": "greet"}\n{"text": "bye", "label": \n')
    with pytest.raises(DataError, match=rf"^{f}:2: invalid JSON \(Expecting value at column 26\)"):
        load_examples(DataSource("x.jsonl"), SENT, data_root=tmp_path)
    g = write(tmp_path / "y.jsonl", '{"sentence": "hi", "label": "greet"}\n')
    with pytest.raises(DataError) as err:
        load_examples(DataSource("y.jsonl"), SENT, data_root=tmp_path)
    assert (
        str(err.value)
        == f"{g}:1: field 'text' (text_column) not found; the row has fields ['sentence', 'label']"
    )


def test_jsonl_tokens_with_tag_ids(tmp_path):
    rows = [
        {"tokens": ["Peter", "lives", "in", "Berlin"], "tags": [1, 0, 0, 3]},
        {"tokens": ["Hi"], "tags": [0]},
    ]
    write(tmp_path / "ner.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    src = DataSource("ner.jsonl", label_map={"0": "O", "1": "B-PER", "2": "I-PER", "3": "B-LOC"})
    ex = load_examples(src, TOK, data_root=tmp_path)
    assert ex == [
        TokenExample(("Peter", "lives", "in", "Berlin"), ("B-PER", "O", "O", "B-LOC")),
        TokenExample(("Hi",), ("O",)),
    ]
    f = write(tmp_path / "bad.jsonl", json.dumps({"tokens": ["a", "b"], "tags": ["O"]}) + "\n")
    with pytest.raises(DataError, match=rf"^{f}:1: 2 tokens but 1 tags$"):
        load_examples(DataSource("bad.jsonl"), TOK, data_root=tmp_path)


def test_json_split_file(tmp_path):
    data = {
        "oos_val": [["what is love", "oos"]],
        "train": [["what's my balance", "balance"], ["transfer money", "transfer"]],
        "oos_train": [["sing me a song", "oos"]],
    }
    f = write(tmp_path / "clinc" / "data_full.json", json.dumps(data, indent=4))
    src = DataSource("clinc/data_full.json", split="train", extra_splits=("oos_train",))
    ex = load_examples(src, SENT, data_root=tmp_path)
    assert [(e.text, e.label) for e in ex] == [
        ("what's my balance", "balance"),
        ("transfer money", "transfer"),
        ("sing me a song", "oos"),
    ]
    assert ex[2].where == f"{f}:oos_train[0]"
    with pytest.raises(DataError) as err:
        load_examples(DataSource("clinc/data_full.json", split="validation"), SENT, data_root=tmp_path)
    assert (
        str(err.value)
        == f"{f}: split key 'validation' not found; the file has keys ['oos_val', 'train', 'oos_train']"
    )
    with pytest.raises(
        DataError,
        match=r"the file is an object of splits; set split to one of \['oos_val', 'train', 'oos_train'\]",
    ):
        load_examples(DataSource("clinc/data_full.json"), SENT, data_root=tmp_path)


def test_json_list_of_objects_and_list_rows(tmp_path):
    write(tmp_path / "a.json", json.dumps([{"q": "hi", "intent": "greet"}, {"q": "bye", "intent": "bye"}]))
    ex = load_examples(DataSource("a.json", text_column="q", label_column="intent"), SENT, data_root=tmp_path)
    assert [(e.text, e.label) for e in ex] == [("hi", "greet"), ("bye", "bye")]
    f = write(tmp_path / "b.json", json.dumps({"train": [[7, "greet", "hi"]]}))
    ex = load_examples(
        DataSource("b.json", split="train", text_column=2, label_column=1), SENT, data_root=tmp_path
    )
    assert ex == [SentenceExample("hi", "greet")]
    with pytest.raises(
        DataError, match=rf"^{f}:train\[0\]: the row is a list of 3 items, not a \[text, label\] pair"
    ):
        load_examples(DataSource("b.json", split="train"), SENT, data_root=tmp_path)


# --------------------------------------------------------------------------- limit
def test_limit_is_seeded_and_keeps_file_order(tmp_path):
    write(tmp_path / "x.csv", "text,label\n" + "".join(f"s{i},{'ab'[i % 2]}\n" for i in range(100)))
    a = load_examples(DataSource("x.csv", limit=10, seed=1), SENT, data_root=tmp_path)
    b = load_examples(DataSource("x.csv", limit=10, seed=1), SENT, data_root=tmp_path)
    c = load_examples(DataSource("x.csv", limit=10, seed=2), SENT, data_root=tmp_path)
    assert len(a) == 10 and a == b and a != c
    order = [int(e.text[1:]) for e in a]
    assert order == sorted(order)
    assert len(load_examples(DataSource("x.csv", limit=1000), SENT, data_root=tmp_path)) == 100


# --------------------------------------------------------------------------- HF datasets
def test_hf_missing_library(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(
        MissingExtraError, match=r"data source 'hf:conll2003' needs datasets: pip install 'mtst\[hf\]'"
    ):
        load_examples(DataSource("hf:conll2003", split="train"), TOK)


def test_hf_offline_names_the_dataset(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    with pytest.raises(
        DataError,
        match=r"^hf:conll2003: cannot load Hugging Face dataset 'conll2003' \(config None, split 'train'\); offline or unreachable\?",
    ):
        load_examples(DataSource("hf:conll2003", split="train"), TOK)


def test_hf_examples_map_class_labels():
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features(
        {
            "tokens": datasets.List(datasets.Value("string")),
            "ner_tags": datasets.List(datasets.ClassLabel(names=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])),
        }
    )
    ds = datasets.Dataset.from_dict(
        {"tokens": [["Peter", "Smith", "in", "Paris"]], "ner_tags": [[1, 2, 0, 3]]}, features=feats
    )
    src = DataSource("hf:conll2003", split="train", tags_column="ner_tags")
    ex = hf_examples(ds, src, TOK, where="hf:conll2003:train")
    assert ex == [TokenExample(("Peter", "Smith", "in", "Paris"), ("B-PER", "I-PER", "O", "B-LOC"))]
    assert ex[0].where == "hf:conll2003:train[0]"

    sst = datasets.Dataset.from_dict(
        {"sentence": ["a gem ", "a mess "], "label": [1, 0]},
        features=datasets.Features(
            {
                "sentence": datasets.Value("string"),
                "label": datasets.ClassLabel(names=["negative", "positive"]),
            }
        ),
    )
    src = DataSource("hf:glue:sst2", split="train", text_column="sentence")
    assert hf_examples(sst, src, SENT, where="w") == [
        SentenceExample("a gem", "positive"),
        SentenceExample("a mess", "negative"),
    ]
    with pytest.raises(
        DataError,
        match=r"^w: column 'text' \(text_column\) not found; the dataset has columns \['sentence', 'label'\]$",
    ):
        hf_examples(sst, DataSource("hf:glue:sst2", split="train"), SENT, where="w")
    unlabeled = datasets.Dataset.from_dict({"sentence": ["x"], "label": [-1]}, features=sst.features)
    with pytest.raises(
        DataError, match=r"^w\[0\]: label id -1 is out of range for the names \['negative', 'positive'\]$"
    ):
        hf_examples(unlabeled, src, SENT, where="w")


# --------------------------------------------------------------------------- labels
def test_label_set():
    sents = [
        SentenceExample("a", "b_label"),
        SentenceExample("b", "a_label"),
        SentenceExample("c", "b_label"),
    ]
    assert label_set(sents, SENT) == ("a_label", "b_label")
    toks = [
        TokenExample(("A", "B"), ("B-PER", "O")),
        TokenExample(("C", "D", "E"), ("B-ORG", "I-ORG", "B-LOC")),
    ]
    # I-PER and I-LOC never occur here but are part of the label set
    assert label_set(toks, TOK) == ("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER")
    with pytest.raises(DataError, match="cannot take a label set from an empty list of examples"):
        label_set([], SENT)
    with pytest.raises(DataError, match=r"^f:1: expected a token example, got SentenceExample$"):
        label_set([SentenceExample("a", "b", "f:1")], TOK)


def test_check_labels_names_where_label_and_label_set():
    check_labels([SentenceExample("a", "x", "f:1")], ["x", "y"], what="validation")
    with pytest.raises(DataError) as err:
        check_labels(
            [SentenceExample("a", "x", "f:1"), SentenceExample("b", "z", "f:2")],
            ["x", "y"],
            what="validation",
        )
    assert str(err.value) == "f:2: label 'z' in validation is not in the training label set ['x', 'y']"
    toks = [
        TokenExample(("A",), ("B-MISC",), "t:4"),
        TokenExample(("B",), ("B-MISC",), "t:6"),
        TokenExample(("C",), ("I-X",), "t:8"),
    ]
    with pytest.raises(DataError) as err:
        check_labels(toks, ["O", "B-PER", "I-PER"], what="test")
    assert str(err.value) == (
        "t:4: label 'B-MISC' in test is not in the training label set ['O', 'B-PER', 'I-PER']; "
        "unknown labels in all: {'B-MISC': 2, 'I-X': 1}"
    )


def test_split_off_is_stratified_and_seeded():
    examples = [SentenceExample(f"s{i}", "big") for i in range(90)] + [
        SentenceExample(f"t{i}", "small") for i in range(10)
    ]
    examples.append(SentenceExample("lonely", "single"))
    rest, held = split_off(examples, 0.2, seed=0)
    assert Counter(e.label for e in held) == {"big": 18, "small": 2}
    assert Counter(e.label for e in rest) == {
        "big": 72,
        "small": 8,
        "single": 1,
    }  # every label stays in train
    assert sorted(rest + held, key=examples.index) == examples  # nothing lost, nothing duplicated
    assert held == [e for e in examples if e in held]  # file order kept
    assert split_off(examples, 0.2, seed=0) == (rest, held)
    assert split_off(examples, 0.2, seed=1)[1] != held
    toks = [TokenExample((f"w{i}",), ("O",)) for i in range(10)]
    rest, held = split_off(toks, 0.3, seed=0)
    assert len(held) == 3 and len(rest) == 7
    with pytest.raises(ConfigError, match=r"validation fraction: expected a value in \(0, 1\), got 1.0"):
        split_off(examples, 1.0, seed=0)
    with pytest.raises(DataError, match="leaves no validation examples"):
        split_off([SentenceExample("a", "x"), SentenceExample("b", "y")], 0.1, seed=0)


def test_tag_scheme_enum_is_a_string():
    assert DataSource("x.txt", scheme="iob1").scheme is TagScheme.IOB1
    assert DataSource("x.txt", scheme="iob1").to_dict()["scheme"] == "iob1"


# --------------------------------------------------------------------------- real data
@pytest.mark.slow
def test_real_conll2003(data_root):
    counts = {
        "train.txt": (14041, 23499, 203621),
        "valid.txt": (3250, 5942, 51362),
        "test.txt": (3453, 5648, 46435),
    }
    for name, (n_sent, n_ent, n_tok) in counts.items():
        ex = load_examples(DataSource(f"conll2003/{name}"), TOK, data_root=data_root)
        assert len(ex) == n_sent
        assert sum(len(bio_spans(e.tags)) for e in ex) == n_ent
        assert sum(len(e.tokens) for e in ex) == n_tok
        if name == "train.txt":
            types = Counter(t for e in ex for t, _, _ in bio_spans(e.tags))
            assert types == {"PER": 6600, "LOC": 7140, "ORG": 6321, "MISC": 3438}
            labels = label_set(ex, TOK)
            assert labels == ("O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER")
        else:
            check_labels(ex, labels, what=name)
    cut = load_examples(DataSource("conll2003/train.txt", limit=5000, seed=0), TOK, data_root=data_root)
    assert len(cut) == 5000


@pytest.mark.slow
def test_real_banking77(data_root):
    train = load_examples(
        DataSource("banking77/train.csv", label_column="category"), SENT, data_root=data_root
    )
    test = load_examples(DataSource("banking77/test.csv", label_column="category"), SENT, data_root=data_root)
    assert (len(train), len(test)) == (10003, 3080)
    labels = label_set(train, SENT)
    categories = json.loads((data_root / "banking77" / "categories.json").read_text())
    assert len(labels) == 77 and set(labels) == set(categories)
    check_labels(test, labels, what="test")
    assert Counter(e.label for e in test) == dict.fromkeys(categories, 40)
    assert all(e.text == e.text.strip() for e in train)  # the quoted "\nHow do I ..." rows are stripped
    rest, val = split_off(train, 0.1, seed=0)
    assert len(rest) + len(val) == 10003 and set(label_set(val, SENT)) == set(labels)


@pytest.mark.slow
def test_real_clinc150(data_root):
    src = DataSource("clinc150/data_full.json", split="train", extra_splits=("oos_train",))
    train = load_examples(src, SENT, data_root=data_root)
    assert len(train) == 15100
    counts = Counter(e.label for e in train)
    assert counts["oos"] == 100 and len(counts) == 151
    assert all(n == 100 for n in counts.values())
    val = load_examples(
        DataSource("clinc150/data_full.json", split="val", extra_splits=("oos_val",)),
        SENT,
        data_root=data_root,
    )
    test = load_examples(DataSource("clinc150/data_full.json", split="test"), SENT, data_root=data_root)
    assert (len(val), len(test)) == (3100, 4500)
    check_labels(val, label_set(train, SENT), what="val")


@pytest.mark.slow
def test_real_sst2(data_root):
    label_map = {"0": "negative", "1": "positive"}
    train = load_examples(
        DataSource("sst2/train_full.tsv", text_column="sentence", label_map=label_map),
        SENT,
        data_root=data_root,
    )
    dev = load_examples(
        DataSource("sst2/dev.tsv", text_column="sentence", label_map=label_map), SENT, data_root=data_root
    )
    assert (len(train), len(dev)) == (67349, 872)
    assert Counter(e.label for e in train) == {"negative": 29780, "positive": 37569}
    assert Counter(e.label for e in dev) == {"negative": 428, "positive": 444}
    # the unlabeled test split: no 'label' column, and the error says which columns exist
    with pytest.raises(
        DataError,
        match=r"test.tsv: column 'label' \(label_column\) not found; the header has columns \['index', 'sentence'\]$",
    ):
        load_examples(DataSource("sst2/test.tsv", text_column="sentence"), SENT, data_root=data_root)


@pytest.mark.slow
def test_real_ag_news_test(data_root):
    names = (data_root / "ag_news" / "classes.txt").read_text().split("\n")
    label_map = {str(i + 1): name for i, name in enumerate(n for n in names if n)}
    assert list(label_map.values()) == ["World", "Sports", "Business", "Sci/Tech"]
    src = DataSource("ag_news/test.csv", header=False, text_column=2, label_column=0, label_map=label_map)
    ex = load_examples(src, SENT, data_root=data_root)
    assert len(ex) == 7600
    assert Counter(e.label for e in ex) == dict.fromkeys(label_map.values(), 1900)
    # AG News has no train split here: a train source must fail with a clear message, not pass empty
    with pytest.raises(DataError, match=r"data file 'ag_news/train.csv' not found"):
        load_examples(
            DataSource("ag_news/train.csv", header=False, text_column=2, label_column=0),
            SENT,
            data_root=data_root,
        )


def test_data_layer_is_torch_free():
    """The export accuracy guard and other torch-free callers read data and score with these modules."""
    import subprocess

    code = (
        "import sys, mtst.data, mtst.alignment, mtst.metrics, mtst.augment; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
