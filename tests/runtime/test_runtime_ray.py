"""Ray Data: the Predictor's columns, a local Ray cluster against the local Engine, a killed actor, --ray.

The cluster tests run a real local Ray cluster (``ray.init`` on this machine, 4 logical CPUs: 2 actors
plus the read tasks) over 7,533 real sentences (Banking77 test, CoNLL-2003 test, the bench corpus) with
a bundle made by the real exporter. Rows must equal the local Engine's, in input order; scores may
differ in the last float32 bits only, because Ray's batches pad texts to other lengths than the local
engine's batches do.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
ray = pytest.importorskip("ray")

from click.testing import CliRunner  # noqa: E402

from mtst.errors import ConfigError, DataError  # noqa: E402
from mtst.runtime.cli import main  # noqa: E402
from mtst.runtime.engine import Engine  # noqa: E402
from mtst.runtime.ray import Predictor, predict_dataset, read_corpus  # noqa: E402
from mtst.runtime.results import Prediction, SentenceLabel, TokenEntities  # noqa: E402

TOL = 1e-5


def _real_sentences(data_root: Path, bench_corpus: Path) -> list[str]:
    with open(data_root / "banking77" / "test.csv", newline="", encoding="utf-8") as f:
        banking = [row["text"] for row in csv.DictReader(f)]
    conll: list[str] = []
    words: list[str] = []
    for line in (data_root / "conll2003" / "test.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                conll.append(" ".join(words))
            words = []
        else:
            words.append(line.split(" ")[0])
    if words:
        conll.append(" ".join(words))
    corpus = bench_corpus.read_text(encoding="utf-8").split("\n")[:-1]
    # a few Banking77 texts hold line breaks (quoted in the CSV): one sentence a line for the .txt input
    return [" ".join(t.splitlines()) for t in banking] + conll + corpus


@pytest.fixture(scope="module")
def corpus(data_root: Path, bench_corpus: Path) -> list[str]:
    texts = _real_sentences(data_root, bench_corpus)
    assert len(texts) >= 5000
    return texts


@pytest.fixture(scope="module")
def corpus_txt(corpus: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("".join(t + "\n" for t in corpus), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(exported_single: Path, corpus: list[str]) -> list[Prediction]:
    """The local Engine's answers for the whole corpus (one process, no Ray)."""
    return Engine.load(exported_single, providers="cpu").predict(corpus)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray cluster for this module, shut down even when a test fails."""
    ray.init(
        address="local",
        num_cpus=4,
        object_store_memory=200 * 2**20,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield
    finally:
        ray.shutdown()


def _assert_rows_equal(rows: list[dict], preds: list[Prediction]) -> None:
    """Row i of a prediction table says what Prediction i says (texts, labels, entities; scores within TOL)."""
    assert len(rows) == len(preds)
    for i, (row, p) in enumerate(zip(rows, preds, strict=True)):
        assert row["text"] == p.text, f"row {i}: text out of order"
        assert row["truncated"] == p.truncated, f"row {i}"
        for name, r in p.heads.items():
            if isinstance(r, SentenceLabel):
                assert row[name] == r.label, f"row {i}: {name}"
                assert abs(row[f"{name}_score"] - r.score) <= TOL, f"row {i}: {name}_score"
            else:
                assert isinstance(r, TokenEntities)
                got = row[name]
                assert [(e["text"], e["label"], e["start"], e["end"]) for e in got] == [
                    (e.text, e.label, e.start, e.end) for e in r.entities
                ], f"row {i}: {name}"
                assert all(abs(g["score"] - e.score) <= TOL for g, e in zip(got, r.entities, strict=True))


# ------------------------------------------------------------------------------ columns (no cluster)


def test_predictor_columns_round_trip_through_parquet(
    exported_single: Path, corpus: list[str], tmp_path: Path
) -> None:
    texts = corpus[::40]  # 189 sentences from all three sources
    texts.append(" ".join(corpus[3100:3110]))  # longer than the bundle's 64 tokens: truncated
    predictor = Predictor(exported_single, embedding=True, providers="cpu")
    out = predictor(pa.table({"id": list(range(len(texts))), "text": texts}))
    assert out.column_names == ["id", "text", "truncated", "intent", "intent_score", "ner", "embedding"]
    pq.write_table(out, tmp_path / "p.parquet")
    back = pq.read_table(tmp_path / "p.parquet")
    assert back.schema == out.schema  # the nested entity lists and the fixed-size embedding survive
    ref = Engine.load(exported_single, providers="cpu").predict(texts, return_embedding=True)
    assert any(p.truncated for p in ref) and any(p.heads["ner"].entities for p in ref)
    _assert_rows_equal(back.to_pylist(), ref)
    emb = np.asarray(back.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(emb, np.stack([p.embedding for p in ref]), atol=TOL)
    assert back.column("id").to_pylist() == list(range(len(texts)))


def test_predictor_takes_numpy_and_pandas_batches(exported_single: Path) -> None:
    predictor = Predictor(exported_single, heads="intent", providers="cpu")
    texts = ["Where is my card?", "A gorgeous, witty film."]
    a = predictor({"text": np.array(texts, dtype=object)})
    b = predictor(pa.table({"text": texts}).to_pandas())
    assert a.column_names == b.column_names == ["text", "truncated", "intent", "intent_score"]
    assert a.column("intent").to_pylist() == b.column("intent").to_pylist()


def test_predictor_errors_name_the_column(exported_single: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"heads: unknown head\(s\) \['nope'\]; this engine has \['intent', 'ner'\]"
    ):
        Predictor(exported_single, heads=iter(["intent", "nope"]), providers="cpu")
    predictor = Predictor(exported_single, providers="cpu")
    with pytest.raises(DataError, match=r"column 'text': not in the input \(it has \['sentence'\]\)"):
        predictor(pa.table({"sentence": ["hi"]}))
    with pytest.raises(
        DataError, match=r"column 'text': row 1 of this batch is null .* the row before it: 'hi'"
    ):
        predictor(pa.table({"text": ["hi", None]}))
    with pytest.raises(DataError, match=r"column 'text': expected strings, got int64"):
        predictor(pa.table({"text": [1, 2]}))
    with pytest.raises(DataError, match=r"input columns \['intent'\] have the names of prediction columns"):
        predictor(pa.table({"text": ["hi"], "intent": ["x"]}))


# ------------------------------------------------------------------------------ a local Ray cluster


@pytest.mark.slow
def test_two_actors_equal_the_local_engine_in_order(
    ray_cluster: None, exported_single: Path, corpus_txt: Path, reference: list[Prediction]
) -> None:
    ds = predict_dataset(read_corpus(corpus_txt), exported_single, actors=2, providers="cpu")
    rows = ds.take_all()
    _assert_rows_equal(rows, reference)


class _KillOnce(Predictor):
    """A Predictor whose actor SIGKILLs its own process on its third batch, once per test (marker file)."""

    def __init__(self, bundle: str, *, marker: str, **options) -> None:
        super().__init__(bundle, **options)
        self.marker = marker
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls == 3:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(batch)


@pytest.mark.slow
def test_killed_actor_is_retried_without_losing_or_duplicating_rows(
    ray_cluster: None,
    exported_single: Path,
    corpus_txt: Path,
    reference: list[Prediction],
    tmp_path: Path,
) -> None:
    import psutil

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules
    marker = tmp_path / "killed.pid"
    ds = read_corpus(corpus_txt).map_batches(
        _KillOnce,
        fn_constructor_kwargs={"bundle": str(exported_single), "marker": str(marker), "providers": "cpu"},
        batch_format="pyarrow",
        batch_size=256,
        compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=1,
    )
    rows = ds.take_all()
    assert marker.is_file(), "no actor was killed"
    assert not psutil.pid_exists(int(marker.read_text()))  # the process really died
    _assert_rows_equal(rows, reference)  # every row once, in order, with the engine's answers


@pytest.mark.slow
def test_mtst_predict_ray_jsonl_folder_and_parquet(
    ray_cluster: None, exported_single: Path, corpus: list[str], reference: list[Prediction], tmp_path: Path
) -> None:
    n = 3000
    folder = tmp_path / "jsonl"
    folder.mkdir()
    for part, (a, b) in enumerate([(0, 1200), (1200, n)]):  # file order = input order
        with open(folder / f"part-{part}.jsonl", "w", encoding="utf-8") as f:
            for i in range(a, b):
                f.write(json.dumps({"id": i, "text": corpus[i]}) + "\n")
                if i == a + 5:
                    f.write("\n")  # blank lines in JSONL are skipped
    out = tmp_path / "out.parquet"
    res = CliRunner().invoke(
        main, [str(exported_single), "--file", str(folder), "--ray", "-o", str(out), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    assert f"{n} texts -> {out}" in res.output
    table = pq.read_table(out)
    assert table.column_names == ["id", "text", "truncated", "intent", "intent_score", "ner"]
    assert table.column("id").to_pylist() == list(range(n))
    _assert_rows_equal(table.to_pylist(), reference[:n])

    # the table it wrote, read back as Parquet input (the text column found by --text-field)
    src = tmp_path / "in.parquet"
    pq.write_table(table.select(["id", "text"]).rename_columns(["id", "sentence"]), src, row_group_size=1000)
    out2 = tmp_path / "out2.parquet"
    res = CliRunner().invoke(
        main,
        [
            *(str(exported_single), "--file", str(src), "--ray", "-o", str(out2)),
            *("--text-field", "sentence", "--heads", "intent", "--embedding", "--no-progress"),
        ],
    )
    assert res.exit_code == 0, res.output
    t2 = pq.read_table(out2)
    assert t2.column_names == ["id", "sentence", "truncated", "intent", "intent_score", "embedding"]
    assert t2.column("intent").to_pylist() == table.column("intent").to_pylist()
    assert t2.column("id").to_pylist() == list(range(n))


@pytest.mark.slow
def test_mtst_predict_ray_names_the_bad_line(
    ray_cluster: None, exported_single: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "typo"}\n', encoding="utf-8")
    res = CliRunner().invoke(
        main, [str(exported_single), "--file", str(bad), "--ray", "-o", str(tmp_path / "o.parquet")]
    )
    assert res.exit_code == 1
    assert f"{bad}:2: field 'text': expected a string (no such field; fields: ['txt'])" in res.output
    assert not (tmp_path / "o.parquet").exists()


def test_mtst_predict_ray_usage(exported_single: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, [str(exported_single), "hello", "--ray"])
    assert res.exit_code == 2
    assert "--ray reads --file PATH and writes --output OUT.parquet" in res.output

    def run(source: Path) -> str:  # errors found before any cluster starts
        res = CliRunner().invoke(
            main, [str(exported_single), "--file", str(source), "--ray", "-o", str(tmp_path / "o.parquet")]
        )
        assert res.exit_code == 1
        return res.output

    (tmp_path / "a.csv").write_text("text\nhi\n")
    assert (
        "a.csv: unknown input format '.csv' (expected one of ['.jsonl', '.ndjson', '.parquet', '.txt'])"
        in run(tmp_path / "a.csv")
    )
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert "empty.jsonl: no texts (the input is empty)" in run(tmp_path / "empty.jsonl")
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.txt").write_text("hi\n")
    (tmp_path / "mixed" / "b.jsonl").write_text('{"text": "hi"}\n')
    assert "mixed: files of several formats (['jsonl', 'text']); give one format per run" in run(
        tmp_path / "mixed"
    )
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.slow
def test_mtst_predict_ray_txt_keeps_every_line(
    ray_cluster: None, exported_single: Path, tmp_path: Path
) -> None:
    """A .txt corpus reads as ``mtst-predict --file`` reads it: BOM and CR dropped, blank lines kept."""
    src = tmp_path / "lines.txt"
    src.write_bytes(b"\xef\xbb\xbfFirst line\r\n\r\nThird line, caf\xc3\xa9\nno newline at the end")
    out = tmp_path / "o.parquet"
    res = CliRunner().invoke(main, [str(exported_single), "--file", str(src), "--ray", "-o", str(out)])
    assert res.exit_code == 0, res.output
    texts = ["First line", "", "Third line, café", "no newline at the end"]
    assert pq.read_table(out).column("text").to_pylist() == texts
    local = CliRunner().invoke(main, [str(exported_single), "--file", str(src)])
    assert [json.loads(line)["text"] for line in local.stdout.splitlines()] == texts

    src.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    res = CliRunner().invoke(main, [str(exported_single), "--file", str(src), "--ray", "-o", str(out)])
    assert res.exit_code == 1
    assert f"{src}:3: not valid UTF-8 (invalid start byte at byte 4)" in res.output


def test_runtime_import_pulls_neither_ray_nor_torch() -> None:
    import subprocess

    code = (
        "import sys, mtst.runtime\n"
        "assert 'ray' not in sys.modules and 'pyarrow' not in sys.modules, 'import mtst.runtime pulled ray'\n"
        "import mtst.runtime.ray, mtst.runtime.ray_corpus\n"
        "print(sorted(m for m in ('torch', 'transformers', 'onnx') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
