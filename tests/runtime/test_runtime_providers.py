"""Provider chains, required providers, session options and the variant choice."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mtst.errors import BundleError, ConfigError, ProviderUnavailableError
from mtst.runtime.bundle import load_bundle
from mtst.runtime.engine import Engine, choose_variant
from mtst.runtime.manifest import Precision
from mtst.runtime.providers import (
    GraphOptimization,
    Provider,
    ProviderPlan,
    SessionSettings,
    create_session,
    resolve_providers,
)


def test_auto_uses_what_is_available() -> None:
    plan = resolve_providers("auto")
    assert plan.chain[-1] is Provider.CPU and plan.required == (Provider.CPU,)


def test_required_cuda_missing_fails_with_reason() -> None:
    # this machine's onnxruntime is the CPU build: requiring CUDA must fail, not fall back silently
    with pytest.raises(
        ProviderUnavailableError,
        match=r"provider cuda \(CUDAExecutionProvider\) is not available in this onnxruntime build .*"
        r"available: \[.*'CPUExecutionProvider'.*\]\); install the GPU build .* or pass allow_fallback=True",
    ):
        resolve_providers(["cuda", "cpu"])


def test_required_cuda_missing_fails_engine_load(toy_single: Path) -> None:
    with pytest.raises(ProviderUnavailableError, match=r"provider tensorrt \(TensorrtExecutionProvider\)"):
        Engine.load(toy_single, providers=["tensorrt", "cuda", "cpu"])


def test_allow_fallback_warns_and_reports_cpu(toy_single: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        engine = Engine.load(toy_single, providers=["cuda"], allow_fallback=True)
    assert engine.active_providers == (Provider.CPU,)
    assert engine.active_providers == ("cpu",)  # str enum: compares with plain names
    assert "provider cuda (CUDAExecutionProvider) is not available" in caplog.text
    assert "falling back (allow_fallback=True)" in caplog.text


def test_silent_fallback_inside_the_session_is_caught(toy_single: Path) -> None:
    """A provider that was handed to ORT but is not active in the session counts as missing."""
    plan = ProviderPlan(chain=(Provider.CPU,), required=(Provider.CUDA,), allow_fallback=False)
    with pytest.raises(
        ProviderUnavailableError,
        match=r"model.onnx: provider\(s\) \['cuda'\] were requested but ONNX Runtime runs \['cpu'\]",
    ):
        create_session(toy_single / "model.onnx", plan, SessionSettings(), what="model.onnx")
    relaxed = ProviderPlan(chain=(Provider.CPU,), required=(Provider.CUDA,), allow_fallback=True)
    _, active = create_session(toy_single / "model.onnx", relaxed, SessionSettings())
    assert active == (Provider.CPU,)


def test_provider_names() -> None:
    assert resolve_providers("cpu").chain == (Provider.CPU,)
    assert resolve_providers(["CPUExecutionProvider"]).required == (Provider.CPU,)
    assert resolve_providers(["CPU", "cpu"]).chain == (Provider.CPU,)
    with pytest.raises(
        ConfigError, match=r"providers\[1\]: 'gpu' is not one of \['tensorrt', 'cuda', 'cpu'\]"
    ):
        resolve_providers(["cpu", "gpu"])
    with pytest.raises(ConfigError, match=r"providers: empty list"):
        resolve_providers([])


def test_session_settings_reach_onnxruntime() -> None:
    so = SessionSettings(intra_op_threads=2, inter_op_threads=1, spinning=False).session_options()
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert (
        SessionSettings(spinning=True)
        .session_options()
        .get_session_config_entry("session.intra_op.allow_spinning")
        == "1"
    )
    basic = SessionSettings(graph_optimization="basic").session_options()  # type: ignore[arg-type]
    assert basic.graph_optimization_level.name == "ORT_ENABLE_BASIC"


def test_session_settings_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match=r"intra_op_threads: expected an integer >= 0 .* got -1"):
        SessionSettings(intra_op_threads=-1)
    with pytest.raises(
        ConfigError,
        match=r"graph_optimization: 'max' is not one of \['disable', 'basic', 'extended', 'all'\]",
    ):
        SessionSettings(graph_optimization="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"graph_optimization: 'max'"):
        Engine.load(Path("."), graph_optimization="max")


def test_tensorrt_options() -> None:
    s = SessionSettings(trt_cache_dir=Path("/tmp/trt"), trt_fp16=True)
    assert s.provider_options(Provider.TENSORRT) == {
        "trt_fp16_enable": "True",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": "/tmp/trt",
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": "/tmp/trt",
    }
    assert s.provider_options(Provider.CPU) == {}


@pytest.fixture(scope="module")
def multi_bundle(toy, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32 single + int8-dynamic single + fp16 single + fp32 split: same toy graphs, labelled apart."""
    return toy.bundle(
        tmp_path_factory.mktemp("multi"),
        layout="single",
        precision="fp32",
        extra_variants=[("int8-dynamic", "single"), ("fp16", "single"), ("fp32", "split")],
    )


def test_variant_by_provider(multi_bundle: Path) -> None:
    b = load_bundle(multi_bundle)
    assert choose_variant(b, Provider.CPU).key == "int8-dynamic/single"
    assert choose_variant(b, Provider.CUDA).key == "fp16/single"
    assert choose_variant(b, Provider.TENSORRT).key == "fp16/single"  # no int8-static here
    assert choose_variant(b, Provider.CPU, precision="fp32").key == "fp32/split"  # split preferred
    assert choose_variant(b, Provider.CPU, precision="fp32", layout="single").key == "fp32/single"
    with pytest.raises(
        BundleError,
        match=r"no variant int8-static in this bundle; it has \['fp32/single', 'int8-dynamic/single'",
    ):
        choose_variant(b, Provider.CPU, precision=Precision.INT8_STATIC)
    with pytest.raises(ConfigError, match=r"precision: 'int4' is not one of"):
        choose_variant(b, Provider.CPU, precision="int4")


def test_engine_reports_variant(multi_bundle: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mtst.runtime.engine"):
        engine = Engine.load(multi_bundle, providers="cpu")
    assert engine.variant.key == "int8-dynamic/single"
    assert "picked variant int8-dynamic/single for provider cpu" in caplog.text
    assert Engine.load(multi_bundle, providers="cpu", precision="fp32").variant.key == "fp32/split"


def test_graph_optimization_enum_accepted(toy_single: Path) -> None:
    e = Engine.load(
        toy_single, providers="cpu", graph_optimization=GraphOptimization.DISABLE, intra_op_threads=1
    )
    assert e.settings.graph_optimization is GraphOptimization.DISABLE and e.settings.intra_op_threads == 1


@pytest.fixture
def cuda_claimed(monkeypatch: pytest.MonkeyPatch) -> None:
    """This onnxruntime claims CUDA is available, but cannot load it: ORT then drops the provider
    when creating the session (a warning, no error) -- the silent fallback of a GPU build whose CUDA
    libraries are missing. Sessions are real; only the availability list is widened."""
    import onnxruntime as ort

    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])


@pytest.mark.filterwarnings(
    "ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names"
)
def test_silent_session_fallback_is_refused(cuda_claimed: None, multi_bundle: Path) -> None:
    with pytest.raises(
        ProviderUnavailableError,
        match=r"provider\(s\) \['cuda'\] were requested but ONNX Runtime runs \['cpu'\] .* pass allow_fallback=True",
    ):
        Engine.load(multi_bundle, providers=["cuda", "cpu"])


@pytest.mark.filterwarnings(
    "ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names"
)
def test_allowed_session_fallback_switches_to_the_cpu_variant(
    cuda_claimed: None, multi_bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        engine = Engine.load(multi_bundle, providers=["cuda", "cpu"], allow_fallback=True)
    assert engine.active_providers == (Provider.CPU,)
    assert engine.variant.key == "int8-dynamic/single"  # fp16 was picked for CUDA, then replaced
    assert "switching variant fp16/single -> int8-dynamic/single" in caplog.text
    # an explicit precision is kept even after a fallback
    assert (
        Engine.load(multi_bundle, providers="cuda", allow_fallback=True, precision="fp16").variant.key
        == "fp16/single"
    )
