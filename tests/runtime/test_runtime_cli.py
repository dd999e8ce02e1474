"""mtst-predict: arguments, files, stdin, JSON lines, table, errors; and a full predict without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mtst.runtime.cli import main
from mtst.runtime.engine import Engine


def _json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_texts_as_arguments_json(toy_single: Path) -> None:
    result = CliRunner().invoke(main, [str(toy_single), "Apple opened an office in Paris.", "Great movie!"])
    assert result.exit_code == 0, result.output
    rows = _json_lines(result.output)
    expected = Engine.load(toy_single, providers="cpu").predict(
        ["Apple opened an office in Paris.", "Great movie!"]
    )
    assert [r["text"] for r in rows] == ["Apple opened an office in Paris.", "Great movie!"]
    for row, p in zip(rows, expected, strict=True):
        assert row == json.loads(json.dumps(p.to_dict()))
        assert set(row["heads"]) == {"intent", "ner"} and "embedding" not in row


def test_file_keeps_every_line_in_order(toy_split: Path, tmp_path: Path) -> None:
    lines = [f"line {i} about Paris" if i % 5 else "" for i in range(600)]  # > one 256-line chunk
    f = tmp_path / "in.txt"
    f.write_text("\n".join(lines), encoding="utf-8")  # no final newline: last line still counts
    result = CliRunner().invoke(main, [str(toy_split), "--file", str(f), "--heads", "intent"])
    assert result.exit_code == 0, result.output
    rows = _json_lines(result.stdout)
    assert [r["text"] for r in rows] == lines
    assert all(set(r["heads"]) == {"intent"} for r in rows)


def test_stdin_and_options(toy_single: Path) -> None:
    data = "hello world\r\n\ufeffsecond line\n".encode()
    result = CliRunner().invoke(
        main,
        [
            str(toy_single),
            "-",
            "--heads",
            "intent,ner",
            "--embedding",
            "--logits",
            "-p",
            "cpu",
            "--threads",
            "1",
        ],
        input=b"\xef\xbb\xbf" + data,
    )
    assert result.exit_code == 0, result.output
    rows = _json_lines(result.stdout)
    assert [r["text"] for r in rows] == ["hello world", "\ufeffsecond line"]  # only a leading BOM is dropped
    assert len(rows[0]["embedding"]) == 8 and set(rows[0]["logits"]) == {"intent", "ner"}


def test_table_format(toy_single: Path) -> None:
    result = CliRunner().invoke(main, [str(toy_single), "Great movie!", "word " * 100, "--format", "table"])
    assert result.exit_code == 0, result.output
    first, second = result.output.splitlines()
    assert first.startswith("   0  Great movie!") and "intent=" in first and "ner=[" in first
    assert second.rstrip().endswith("(truncated)")


def test_errors(toy_single: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, [str(toy_single)])
    assert r.exit_code == 2 and "nothing to predict" in r.output
    r = runner.invoke(main, [str(toy_single), "x", "--file", "y"])
    assert r.exit_code == 2 and "not both" in r.output
    r = runner.invoke(main, [str(toy_single), "x", "--heads", "nope"])
    assert r.exit_code == 1 and "unknown head(s) ['nope']; this engine has ['intent', 'ner']" in r.output
    r = runner.invoke(main, [str(toy_single), "x", "-p", "cuda"])
    assert r.exit_code == 1 and "provider cuda (CUDAExecutionProvider) is not available" in r.output
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"fine\ncaf\xe9\n")
    r = runner.invoke(main, [str(toy_single), "--file", str(bad)])
    assert r.exit_code == 1 and "latin1.txt:2: not valid UTF-8" in r.output
    r = runner.invoke(main, [str(toy_single), "--file", str(tmp_path / "missing.txt")])
    assert r.exit_code == 2 and "missing.txt" in r.output
    r = runner.invoke(main, [str(toy_single), "x", "--precision", "fp16"])
    assert r.exit_code == 1 and "no variant fp16 in this bundle; it has ['fp32/single']" in r.output


def test_console_script_installed(toy_single: Path) -> None:
    exe = Path(sys.executable).with_name("mtst-predict")
    out = subprocess.run(
        [str(exe), str(toy_single), "Great movie!"], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout)["text"] == "Great movie!"
    assert out.stderr == ""  # no progress bar, no log noise when not asked


@pytest.mark.parametrize("layout", ["single", "split"])
def test_full_predict_imports_no_torch(request: pytest.FixtureRequest, layout: str) -> None:
    bundle = request.getfixturevalue(f"toy_{layout}")
    code = (
        "import sys\n"
        "from mtst.runtime import Engine\n"
        f"e = Engine.load({str(bundle)!r}, providers='cpu', embedding_cache=8)\n"
        "p = e.predict(['Apple opened an office in Paris.'], return_embedding=True)\n"
        "e.embed(['x'])\n"
        "if e.variant.layout.value == 'split': e.predict_from_embeddings(p[0].embedding)\n"
        "from mtst.runtime.cli import main\n"
        "bad = sorted(m for m in ('torch', 'transformers', 'onnx', 'safetensors') if m in sys.modules)\n"
        "print('BAD', ','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "BAD", f"a full predict pulled in {out.stdout.strip()}"


def test_min_entity_score_option(toy_single: Path) -> None:
    text = "Angela Merkel visited Paris with Apple"
    loose = CliRunner().invoke(main, [str(toy_single), text])
    strict = CliRunner().invoke(main, [str(toy_single), text, "--min-entity-score", "1"])
    assert loose.exit_code == 0 and strict.exit_code == 0, loose.output + strict.output
    assert json.loads(loose.output)["heads"]["ner"]["entities"]  # the toy head tags something here
    assert json.loads(strict.output)["heads"]["ner"]["entities"] == []
    bad = CliRunner().invoke(main, [str(toy_single), text, "--min-entity-score", "2"])
    assert bad.exit_code == 2 and "--min-entity-score" in bad.output
