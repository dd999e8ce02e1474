"""TensorRT on CPU: shape profiles from real sentences, the provider options, the engine cache folder,
the manifest field, and an engine load that hands them to ONNX Runtime (refused when the TensorRT
provider is missing, accepted on a fallback only when allowed). No TensorRT here: nothing is built."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from mtst.errors import BundleError, ConfigError, ProviderUnavailableError
from mtst.runtime.bundle import load_bundle
from mtst.runtime.engine import Engine
from mtst.runtime.manifest import Manifest
from mtst.runtime.providers import Provider, SessionSettings
from mtst.runtime.shape_profiles import ShapeProfile, TrtProfiles, profile_options
from mtst.runtime.tokenize import TextTokenizer
from mtst.runtime.trt import (
    cache_folder,
    gpu_name,
    lengths_from_file,
    profiles_from_lengths,
    tensorrt_version,
)

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def test_one_profile_covers_every_length() -> None:
    lengths = [5] * 50 + [12] * 40 + [40] * 9 + [300]
    p = profiles_from_lengths(lengths, max_seq_len=256, max_batch=32, batch_tokens=4096)
    assert p.profiles == (ShapeProfile(min=(1, 1), opt=(32, 5), max=(32, 256)),)
    assert p.sentences == 100
    assert p.length_quantiles == {"p50": 5, "p90": 12, "p99": 40, "max": 256}  # 300 truncated to 256


def test_cut_profiles_tile_the_sequence_range() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=1000)
    p = profiles_from_lengths(lengths, max_seq_len=128, max_batch=16, batch_tokens=256, cuts=(0.5, 0.9))
    assert len(p.profiles) == 3
    assert p.profiles[0].min == (1, 1) and p.profiles[-1].max == (16, 128)
    for a, b in zip(p.profiles, p.profiles[1:], strict=False):
        assert b.min[1] == a.max[1] + 1  # no gap, no overlap
    for prof in p.profiles:
        assert prof.min[1] <= prof.opt[1] <= prof.max[1]
        assert prof.opt[0] == max(1, min(16, 256 // prof.opt[1]))  # what the batcher makes of such lengths
    with pytest.raises(
        ConfigError, match=r"cuts: expected quantiles strictly between 0 and 1, got \[0.5, 1.0\]"
    ):
        profiles_from_lengths(lengths, max_seq_len=128, max_batch=16, batch_tokens=256, cuts=(0.5, 1.0))
    with pytest.raises(ConfigError, match=r"max_batch: expected an integer >= 1, got 0"):
        profiles_from_lengths(lengths, max_seq_len=128, max_batch=0, batch_tokens=256)


def test_profiles_from_the_real_corpus(bench_corpus: Path, minilm_tokenizer_json: Path) -> None:
    tok = TextTokenizer.from_file(minilm_tokenizer_json, max_seq_len=256, pad_token_id=0, input_names=INPUTS)
    lengths = lengths_from_file(bench_corpus, tok)
    assert len(lengths) == 1000 and lengths.min() >= 3
    p = profiles_from_lengths(
        lengths, max_seq_len=256, max_batch=32, batch_tokens=4096, cuts=(0.5, 0.9, 0.99)
    )
    q = p.length_quantiles
    assert q["p50"] <= q["p90"] <= q["p99"] <= q["max"] <= 256
    assert [x.max[1] for x in p.profiles] == [q["p50"], q["p90"], q["p99"], 256]
    assert p.profiles[0].opt[1] <= q["p50"]


def test_option_strings() -> None:
    profiles = (
        ShapeProfile(min=(1, 1), opt=(32, 16), max=(32, 24)),
        ShapeProfile(min=(1, 25), opt=(8, 40), max=(32, 256)),
    )
    assert profile_options(profiles, INPUTS[:2]) == {
        "trt_profile_min_shapes": "input_ids:1x1,attention_mask:1x1,input_ids:1x25,attention_mask:1x25",
        "trt_profile_opt_shapes": "input_ids:32x16,attention_mask:32x16,input_ids:8x40,attention_mask:8x40",
        "trt_profile_max_shapes": "input_ids:32x24,attention_mask:32x24,input_ids:32x256,attention_mask:32x256",
    }
    settings = SessionSettings(
        trt_cache_dir=Path("/c"), trt_int8=True, trt_profiles=profiles[:1], trt_profile_inputs=("input_ids",)
    )
    assert settings.provider_options(Provider.TENSORRT) == {
        "trt_fp16_enable": "True",
        "trt_int8_enable": "True",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": "/c",
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": "/c",
        "trt_profile_min_shapes": "input_ids:1x1",
        "trt_profile_opt_shapes": "input_ids:32x16",
        "trt_profile_max_shapes": "input_ids:32x24",
    }
    assert settings.provider_options(Provider.CUDA) == {}
    with pytest.raises(ConfigError, match=r"expected 1 <= min <= opt <= max in every axis, got min \(1, 8\)"):
        ShapeProfile(min=(1, 8), opt=(4, 4), max=(8, 16))


def test_cache_folder_is_keyed_by_bundle_gpu_and_tensorrt() -> None:
    sha = "0123456789abcdef" * 4
    assert cache_folder("/cache", bundle_sha256=sha, gpu="NVIDIA H200", tensorrt="10.9.0") == Path(
        "/cache/0123456789abcdef/NVIDIA-H200-trt10.9.0"
    )
    other = cache_folder("/cache", bundle_sha256=sha, gpu="NVIDIA A100-SXM4-80GB", tensorrt="10.9.0")
    assert other.name == "NVIDIA-A100-SXM4-80GB-trt10.9.0"
    with pytest.raises(ConfigError, match=r"bundle_sha256: expected hex digits, got 'model.onnx'"):
        cache_folder("/cache", bundle_sha256="model.onnx", gpu="x", tensorrt="10")
    assert isinstance(gpu_name(), str) and isinstance(tensorrt_version(), str)  # "unknown..." on this machine


def test_manifest_field_round_trip_and_errors(toy_single: Path) -> None:
    m = load_bundle(toy_single).manifest
    assert m.trt_profiles is None and "trt_profiles" not in m.to_dict()  # optional: old bundles unchanged
    p = TrtProfiles(
        profiles=(ShapeProfile((1, 1), (8, 12), (32, 128)),), sentences=10, length_quantiles={"p50": 9}
    )
    d = json.loads(Manifest.from_dict({**m.to_dict(), "trt_profiles": p.to_dict()}).to_json())
    assert Manifest.from_dict(d).trt_profiles == p
    d["trt_profiles"]["profiles"][0]["opt"] = [8]
    with pytest.raises(
        BundleError, match=r"manifest.json: trt_profiles.profiles\[0\].opt: expected \[batch, sequence\]"
    ):
        Manifest.from_dict(d)
    d["trt_profiles"]["profiles"][0]["opt"] = [64, 12]
    with pytest.raises(
        BundleError, match=r"trt_profiles.profiles\[0\]: trt profile: expected 1 <= min <= opt <= max"
    ):
        Manifest.from_dict(d)


def test_missing_tensorrt_is_refused(toy_single: Path, bench_corpus: Path) -> None:
    with pytest.raises(
        ProviderUnavailableError, match=r"provider tensorrt \(TensorrtExecutionProvider\) is not available"
    ):
        Engine.load(toy_single, providers=["tensorrt", "cpu"], trt_profiles_from=bench_corpus)


@pytest.fixture
def trt_claimed(monkeypatch: pytest.MonkeyPatch) -> None:
    """This onnxruntime claims TensorRT, which it cannot load: the session falls back to CPU (real sessions)."""
    import onnxruntime as ort

    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", *real])


@pytest.mark.filterwarnings("ignore:Specified provider 'TensorrtExecutionProvider' is not in available")
def test_engine_hands_profiles_and_cache_to_tensorrt(
    trt_claimed: None, toy_split: Path, bench_corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(
        ProviderUnavailableError,
        match=r"provider\(s\) \['tensorrt'\] were requested but ONNX Runtime runs \['cpu'\]",
    ):
        Engine.load(toy_split, providers=["tensorrt", "cpu"], trt_profiles_from=bench_corpus)
    with caplog.at_level(logging.WARNING):
        engine = Engine.load(
            toy_split,
            providers=["tensorrt", "cpu"],
            allow_fallback=True,
            trt_profiles_from=bench_corpus,
            trt_cache_dir=tmp_path,
            batch_size=16,
        )
    assert engine.active_providers == (Provider.CPU,)
    s = engine.settings
    (profile,) = s.trt_profiles
    assert profile.min == (1, 1) and profile.max == (16, load_bundle(toy_split).manifest.max_seq_len)
    assert s.trt_profile_inputs == load_bundle(toy_split).manifest.inputs
    assert s.trt_cache_dir is not None and s.trt_cache_dir.parent.parent == tmp_path
    assert s.trt_cache_dir.name.endswith(f"-trt{tensorrt_version()}")
    opts = s.provider_options(Provider.TENSORRT)
    assert opts["trt_profile_max_shapes"].startswith(f"input_ids:16x{profile.max[1]}")
    assert engine.predict(["hello there"])[0].heads  # it runs (on CPU)


def test_export_writes_profiles_into_the_manifest(
    exported_single: Path, bench_corpus: Path, tmp_path: Path
) -> None:
    import shutil

    from click.testing import CliRunner

    from mtst.export.cli import _trt_profiles, main

    bundle = tmp_path / "bundle"
    shutil.copytree(exported_single, bundle)
    line = _trt_profiles(bundle, bench_corpus)  # what mtst-export --trt-profiles-from does after the export
    assert line.startswith("trt_profiles from 1000 sentences (lengths {'p50': ")
    m = load_bundle(bundle).manifest  # hashes still verify: the manifest lists no hash of itself
    assert m.trt_profiles is not None and m.trt_profiles.sentences == 1000
    (profile,) = m.trt_profiles.profiles
    assert profile.min == (1, 1) and profile.max == (32, m.max_seq_len)
    result = CliRunner().invoke(
        main, ["ckpt", "-o", str(tmp_path / "h"), "--heads-only", "--trt-profiles-from", str(bench_corpus)]
    )
    assert result.exit_code == 2 and "--trt-profiles-from needs a bundle with an encoder" in result.output
