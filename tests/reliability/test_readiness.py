"""Readiness: an engine comes back only when it can answer; every way of not being ready is typed.

A corrupt bundle never gives a working engine (the corpus covers hundreds of ways; here the race: a
file swapped between verification and session creation), bad ``providers`` values are ConfigErrors,
a provider that is not there is a ProviderUnavailableError unless fallback is allowed, and
``mtst-predict`` on an odd bundle prints one clean error line, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
from _bundle_fixtures import MANIFEST, edit, put
from click.testing import CliRunner

from mtst.errors import BundleError, ConfigError, ProviderUnavailableError
from mtst.runtime.bundle import load_bundle
from mtst.runtime.cli import main as predict_main
from mtst.runtime.engine import Engine
from mtst.runtime.providers import SessionSettings, resolve_providers
from mtst.runtime.variants import Sessions, open_variant

CPU_ONLY = "CUDAExecutionProvider" not in ort.get_available_providers()


def test_good_bundle_answers_right_after_load(rel_bundle: Path) -> None:
    engine = Engine.load(rel_bundle, providers=["cpu"])
    (p,) = engine.predict(["Book a table in Paris."])
    assert set(p.heads) == {"intent", "ner"}


@pytest.mark.parametrize("swapped", ["model.onnx", "tokenizer.json"])
def test_a_file_corrupted_after_verification_is_not_what_the_engine_runs(
    bundle_copy: Path, rel_bundle: Path, swapped: str
) -> None:
    texts = ["thanks a lot", "Where is my card?"]
    expected = Engine.load(rel_bundle, providers=["cpu"]).predict(texts)
    b = load_bundle(bundle_copy)
    data = bytearray((bundle_copy / swapped).read_bytes())
    data[len(data) // 3 : len(data) // 3 + 64] = b"\xff" * 64
    put(bundle_copy / swapped, bytes(data))
    sessions = Sessions(resolve_providers(["cpu"]), SessionSettings())
    variant, runner = open_variant(b, sessions)
    engine = Engine(b, variant, runner, sessions, batch_size=8, max_batch_tokens=None, embedding_cache=0)
    assert [p.heads for p in engine.predict(texts)] == [p.heads for p in expected]
    with pytest.raises(BundleError, match=rf"{swapped}: sha256 mismatch"):
        Engine.load(bundle_copy, providers=["cpu"])  # and the next load sees the change


@pytest.mark.parametrize("providers", [None, 5, 1.5, {"cpu": 1}, b"cpu", [None], [5]])
def test_providers_of_the_wrong_type_are_config_errors(rel_bundle: Path, providers: object) -> None:
    with pytest.raises(ConfigError, match=r"^providers(\[0\])?: expected"):
        Engine.load(rel_bundle, providers=providers)  # type: ignore[arg-type]


def test_unknown_provider_name_is_a_config_error(rel_bundle: Path) -> None:
    with pytest.raises(ConfigError, match=r"providers\[0\]: 'quantum' is not one of"):
        Engine.load(rel_bundle, providers=["quantum"])


@pytest.mark.skipif(not CPU_ONLY, reason="this machine has the CUDA provider")
@pytest.mark.parametrize("name", ["cuda", "tensorrt", "CUDAExecutionProvider"])
def test_missing_gpu_provider_raises_unless_fallback_is_allowed(rel_bundle: Path, name: str) -> None:
    with pytest.raises(ProviderUnavailableError, match=r"is not available in this onnxruntime build"):
        Engine.load(rel_bundle, providers=[name])
    engine = Engine.load(rel_bundle, providers=[name], allow_fallback=True)
    assert [p.value for p in engine.active_providers] == ["cpu"]
    assert engine.predict(["hello"])[0].heads


def _odd_heads(b: Path) -> None:
    edit(b, lambda m: m.update(heads=[1]))


def _symlink_loop(b: Path) -> None:
    (b / MANIFEST).unlink()
    os.symlink("loop.json", b / MANIFEST)
    os.symlink(MANIFEST, b / "loop.json")


def _nested(b: Path) -> None:
    put(b / MANIFEST, b'{"a":' * 50_000 + b"1" + b"}" * 50_000)


def _not_utf8(b: Path) -> None:
    put(b / MANIFEST, b"\xff\xfe\x00")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_odd_heads, r"manifest.json: heads\[0\]: expected dict, got 1"),
        (_symlink_loop, r"manifest.json: a symlink loop"),
        (_nested, r"manifest.json: invalid JSON \(nested too deeply\)"),
        (_not_utf8, r"manifest.json: invalid JSON \('utf-8' codec can't decode"),
    ],
)
def test_mtst_predict_on_an_odd_bundle_prints_one_clean_line(bundle_copy: Path, make, message: str) -> None:
    make(bundle_copy)
    result = CliRunner().invoke(predict_main, [str(bundle_copy), "hello"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    import re

    assert re.search(message, lines[0]), lines[0]


def test_mtst_predict_process_exits_cleanly_on_a_nested_manifest(bundle_copy: Path) -> None:
    """The real console script in a fresh process: exit status 1, one stderr line, no traceback."""
    _odd_heads(bundle_copy)
    env = {**os.environ, "PYTHONFAULTHANDLER": "0"}
    code = "from mtst.runtime.cli import main; main()"
    res = subprocess.run(
        [sys.executable, "-c", code, str(bundle_copy), "hello"], capture_output=True, env=env, timeout=120
    )
    err = res.stderr.decode().strip().splitlines()
    assert res.returncode == 1 and len(err) == 1 and err[0].startswith("Error: ") and "heads[0]" in err[0], (
        res.stderr
    )
