"""``mtst-export --format triton`` on the tiny bundle: the repository's files and configs (parsed with
tritonclient's schema), the served logic in-process against the Engine, the ensemble's graph on
onnxruntime, and the errors. The real server runs in test_triton_server.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tritonkit import assert_ensemble_matches, assert_served_equal, parse_config, run_ensemble

from mtst.errors import BundleError, ConfigError
from mtst.export.cli import main
from mtst.export.pbtxt import Ident, to_pbtxt
from mtst.export.triton import REPOSITORY_FILE, TritonOptions, export_triton
from mtst.runtime import Engine, load_bundle
from mtst.runtime.bundle import hash_file
from mtst.runtime.triton_io import Request, TextModel, TokenizeStep, text_model_outputs

SENTENCES = [
    "Apple opened an office in Paris.",
    "I lost my card yesterday, what should I do?",
    "",
    "ünïcødé — naïve café in Zürich",
    "word " * 200,  # longer than max_seq_len: truncated
    "Hi",
]


@pytest.fixture(scope="module")
def repo(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "repo"
    export_triton(tiny_bundle, out, options=TritonOptions(name="tiny", max_batch_size=16, queue_delay_us=500))
    return out


@pytest.fixture(scope="module")
def engine(repo: Path) -> Engine:
    return Engine.load(repo / "tiny" / "1" / "bundle", providers="cpu")


def _column(texts: list[str]) -> np.ndarray:
    return np.array([[t.encode("utf-8")] for t in texts], dtype=object)


def test_repository_layout_and_copied_bundle(repo: Path, tiny_bundle: Path) -> None:
    names = sorted(p.name for p in repo.iterdir())
    assert names == [REPOSITORY_FILE, "tiny", "tiny_ensemble", "tiny_onnx", "tiny_tokenizer"]
    copied = load_bundle(repo / "tiny" / "1" / "bundle", verify=True)
    original = load_bundle(tiny_bundle)
    assert copied.manifest == original.manifest
    assert (repo / "tiny_onnx" / "1" / "model.onnx").read_bytes() == (tiny_bundle / "model.onnx").read_bytes()
    assert (repo / "tiny_ensemble" / "1").is_dir()
    import mtst.export

    shipped = Path(mtst.export.__file__).parent / "triton_models"
    assert (repo / "tiny" / "1" / "model.py").read_text() == (shipped / "text_model.py").read_text()
    tok_model = (repo / "tiny_tokenizer" / "1" / "model.py").read_text()
    assert tok_model == (shipped / "tokenizer_model.py").read_text()
    doc = json.loads((repo / REPOSITORY_FILE).read_text())
    assert doc["models"] == {
        "tiny": "text",
        "tiny_onnx": "onnx",
        "tiny_tokenizer": "tokenizer",
        "tiny_ensemble": "ensemble",
    }
    assert doc["onnx_variant"] == "fp32/single" and doc["options"]["max_batch_size"] == 16


def test_text_model_config(repo: Path) -> None:
    c = parse_config(repo / "tiny" / "config.pbtxt")
    manifest = load_bundle(repo / "tiny" / "1" / "bundle").manifest
    assert (c.name, c.backend, c.max_batch_size) == ("tiny", "python", 16)
    assert [(i.name, i.data_type, list(i.dims)) for i in c.input] == [("text", 13, [1])]  # 13 = TYPE_STRING
    specs = text_model_outputs(manifest)
    assert [(o.name, list(o.dims)) for o in c.output] == [(s.name, list(s.dims)) for s in specs]
    assert [o.name for o in c.output] == [
        "embedding",
        "truncated",
        "intent_label",
        "intent_score",
        "intent_scores",
        "ner_entities",
    ]
    assert list(c.dynamic_batching.preferred_batch_size) == [8, 16]  # (8, 16, 32) capped at 16
    assert c.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind) for g in c.instance_group] == [(1, 2)]  # 2 = KIND_CPU
    params = {k: v.string_value for k, v in c.parameters.items()}
    assert params["providers"] == "cpu"
    assert params["manifest_sha256"] == hash_file(repo / "tiny" / "1" / "bundle" / "manifest.json")


def test_onnx_tokenizer_and_ensemble_configs(repo: Path) -> None:
    onnx_cfg = parse_config(repo / "tiny_onnx" / "config.pbtxt")
    assert (onnx_cfg.platform, onnx_cfg.max_batch_size) == ("onnxruntime_onnx", 16)
    assert [(i.name, list(i.dims)) for i in onnx_cfg.input] == [
        ("input_ids", [-1]),
        ("attention_mask", [-1]),
        ("token_type_ids", [-1]),
    ]
    assert [(o.name, list(o.dims)) for o in onnx_cfg.output] == [
        ("embedding", [32]),
        ("intent", [3]),
        ("ner", [-1, 5]),
    ]
    assert list(onnx_cfg.dynamic_batching.preferred_batch_size) == [8, 16]
    assert not onnx_cfg.optimization.execution_accelerators.gpu_execution_accelerator

    tok = parse_config(repo / "tiny_tokenizer" / "config.pbtxt")
    params = {k: v.string_value for k, v in tok.parameters.items()}
    assert params["tokenizer_sha256"] == hash_file(repo / "tiny_tokenizer" / "1" / "tokenizer.json")
    assert (params["max_seq_len"], params["inputs"]) == ("64", "input_ids,attention_mask,token_type_ids")

    # every name the ensemble wires exists on the side it is wired to
    ens = parse_config(repo / "tiny_ensemble" / "config.pbtxt")
    assert ens.platform == "ensemble" and ens.max_batch_size == 16
    configs = {"tiny_tokenizer": tok, "tiny_onnx": onnx_cfg}
    available = {i.name for i in ens.input}
    for step in ens.ensemble_scheduling.step:
        model = configs[step.model_name]
        assert set(step.input_map) == {i.name for i in model.input}
        assert set(step.input_map.values()) <= available
        assert set(step.output_map) <= {o.name for o in model.output}
        available |= set(step.output_map.values())
    assert {o.name for o in ens.output} <= available
    dims = {o.name: list(o.dims) for c in configs.values() for o in c.output}
    assert all(list(o.dims) == dims[o.name] for o in ens.output)


def test_tensorrt_accelerator_on_gpu(tiny_bundle: Path, tmp_path: Path) -> None:
    opts = TritonOptions(name="g", device="gpu", instances=2, tensorrt=True, trt_cache_dir="/cache/trt")
    report = export_triton(tiny_bundle, tmp_path / "repo", options=opts)
    assert any("--no-optimize" in n for n in report.notes) or not load_bundle(tiny_bundle).manifest.variants[
        0
    ].details.get("fusions")
    c = parse_config(tmp_path / "repo" / "g_onnx" / "config.pbtxt")
    assert [(g.count, g.kind) for g in c.instance_group] == [(2, 1)]  # 1 = KIND_GPU
    (acc,) = c.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt"
    assert acc.parameters["precision_mode"] == "FP16"
    assert acc.parameters["trt_engine_cache_enable"] == "1"
    assert acc.parameters["trt_engine_cache_path"] == "/cache/trt"
    assert acc.parameters["trt_profile_max_shapes"] == (
        "input_ids:64x64,attention_mask:64x64,token_type_ids:64x64"
    )
    text = parse_config(tmp_path / "repo" / "g" / "config.pbtxt")
    assert {k: v.string_value for k, v in text.parameters.items()}["providers"] == "cuda,cpu"
    tok = parse_config(tmp_path / "repo" / "g_tokenizer" / "config.pbtxt")
    assert [g.kind for g in tok.instance_group] == [2]  # tokenizing stays on CPU


def test_text_model_answers_like_the_engine(repo: Path, engine: Engine) -> None:
    model = TextModel.load(repo / "tiny" / "1" / "bundle", {"providers": "cpu", "max_batch_tokens": "none"})
    requests = [
        Request(_column(SENTENCES[:2])),
        Request(_column(SENTENCES[2:5]), frozenset({"intent_label", "embedding"})),
        Request(_column(SENTENCES[5:])),
    ]
    answers = model.answer(requests)
    local = engine.predict(SENTENCES, return_embedding=True)
    assert isinstance(answers[0], dict) and isinstance(answers[1], dict)
    assert set(answers[0]) == {s.name for s in model.outputs}
    assert set(answers[1]) == {"intent_label", "embedding"}
    assert answers[0]["intent_scores"].shape == (2, 3) and answers[0]["embedding"].dtype == np.float32
    assert answers[1]["intent_label"].shape == (3, 1)
    assert_served_equal(local[:2], answers[0])
    assert_served_equal(local[2:5], answers[1])
    assert_served_equal(local[5:], answers[2])  # type: ignore[arg-type]
    assert answers[1]["embedding"].shape == (3, 32)
    assert bool(answers[0]["truncated"].any()) is False
    whole = model.answer([Request(_column(SENTENCES))])[0]
    assert isinstance(whole, dict) and whole["truncated"].reshape(-1).tolist() == [p.truncated for p in local]
    assert whole["truncated"].reshape(-1).tolist()[4] is True


def test_bad_requests_get_their_own_errors(repo: Path, engine: Engine) -> None:
    model = TextModel(engine)
    bad_utf8 = np.array([[b"fine"], [b"\xff\xfe broken"]], dtype=object)
    answers = model.answer(
        [
            Request(None),
            Request(bad_utf8),
            Request(_column(["Apple opened an office in Paris."]), frozenset({"nope"})),
            Request(_column(["Apple opened an office in Paris."]), frozenset({"ner_entities"})),
            Request(np.array([[b"a", b"b"]], dtype=object)),
        ]
    )
    assert answers[0] == "request 0: input 'text' is missing"
    assert answers[1] == "text[1]: not valid UTF-8 (invalid start byte at byte 0)"
    assert isinstance(answers[2], str) and answers[2].startswith(
        "request 2: outputs ['nope'] are not outputs"
    )
    assert isinstance(answers[3], dict) and set(answers[3]) == {"ner_entities"}
    assert answers[4] == "text: expected shape [batch, 1], got [1, 2]"


def test_tokenize_step_and_onnx_graph_run_the_ensemble(repo: Path, engine: Engine) -> None:
    params = {
        k: v.string_value
        for k, v in parse_config(repo / "tiny_tokenizer" / "config.pbtxt").parameters.items()
    }
    step = TokenizeStep.load(repo / "tiny_tokenizer" / "1" / "tokenizer.json", params)
    texts = [t for t in SENTENCES if t]
    feeds = step.run(texts)
    assert feeds["input_ids"].shape[1] % 16 == 0 and feeds["offsets"].shape[2] == 2
    outputs = run_ensemble(repo, "tiny", texts, step.run)
    assert_ensemble_matches(engine, texts, outputs)
    # one text at a time (other padding) gives the same answers
    for t in texts[:3]:
        assert_ensemble_matches(engine, [t], run_ensemble(repo, "tiny", [t], step.run))


def test_a_changed_bundle_or_manifest_fails_the_load(repo: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(repo / "tiny" / "1" / "bundle", bundle)
    params = {"manifest_sha256": hash_file(bundle / "manifest.json")}
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["provenance"]["note"] = "edited"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        BundleError, match=r"manifest.json: sha256 mismatch: config.pbtxt parameters.manifest_sha256"
    ):
        TextModel.load(bundle, params)
    shutil.rmtree(bundle)
    shutil.copytree(repo / "tiny" / "1" / "bundle", bundle)
    with (bundle / "tokenizer.json").open("a") as f:
        f.write(" ")
    with pytest.raises(BundleError, match=r"tokenizer.json: size mismatch"):
        TextModel.load(bundle, params)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"intra_op_threads": "two"}, r"parameters.intra_op_threads: expected an integer >= 0, got 'two'"),
        ({"parallel_batches": "0"}, r"parameters.parallel_batches: expected an integer >= 1, got '0'"),
        ({"min_entity_score": "2"}, r"parameters.min_entity_score: expected a number in \[0, 1\], got '2'"),
        ({"batchsize": "8"}, r"parameters \['batchsize'\] are not known"),
    ],
)
def test_bad_model_parameters_are_named(repo: Path, params: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TextModel.load(repo / "tiny" / "1" / "bundle", params)


def test_option_errors(tiny_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"name: 'my model': expected letters, digits"):
        TritonOptions(name="my model")
    with pytest.raises(ConfigError, match=r"tensorrt: the TensorRT accelerator runs on GPU instances"):
        TritonOptions(tensorrt=True)
    with pytest.raises(ConfigError, match=r"device: 'tpu' is not one of \['cpu', 'gpu'\]"):
        TritonOptions(device="tpu")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"max_batch_size: expected an integer >= 1, got 0"):
        TritonOptions(max_batch_size=0)
    with pytest.raises(ConfigError, match=r"text_parameters: \['threads'\] are not known"):
        TritonOptions(text_parameters={"threads": "1"})
    with pytest.raises(
        BundleError, match=r"no variant int8-static-cpu in this bundle; it has \['fp32/single'\]"
    ):
        export_triton(
            tiny_bundle, tmp_path / "r", options=TritonOptions(text_parameters={"precision": "int8"})
        )
    with pytest.raises(BundleError, match=r"no single-layout int8-static-cpu variant for the ONNX model"):
        export_triton(tiny_bundle, tmp_path / "r", options=TritonOptions(onnx_precision="int8"))
    assert not (tmp_path / "r").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match=r"mine: already exists \(pass --overwrite"):
        export_triton(tiny_bundle, tmp_path / "mine")
    with pytest.raises(ConfigError, match=r"mine: exists and is not a repository written by mtst-export"):
        export_triton(tiny_bundle, tmp_path / "mine", overwrite=True)
    with pytest.raises(BundleError, match=r"nope: not a directory"):
        export_triton(tmp_path / "nope", tmp_path / "r")


def test_split_only_bundle_gets_the_text_model_alone(
    tiny_checkpoint: Path, bench_corpus: Path, tmp_path: Path
) -> None:
    from mtst.export import export_bundle

    export_bundle(
        tiny_checkpoint, tmp_path / "split", split=True, parity_data=bench_corpus, accuracy_guard=False
    )
    report = export_triton(tmp_path / "split", tmp_path / "repo")
    assert list(report.models) == ["mtst"]
    assert "no single-layout variant" in report.notes[0]
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["mtst", REPOSITORY_FILE]
    model = TextModel.load(tmp_path / "repo" / "mtst" / "1" / "bundle", {})
    (answer,) = model.answer([Request(_column(["Apple opened an office in Paris."]))])
    assert isinstance(answer, dict) and answer["intent_label"].shape == (1, 1)


def test_cli_from_checkpoint_and_from_bundle(
    tiny_checkpoint: Path, tiny_bundle: Path, bench_corpus: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        main,
        [
            *(str(tiny_checkpoint), "-o", str(tmp_path / "a"), "--format", "triton", "--name", "ner-intent"),
            *("--parity-data", str(bench_corpus), "--no-accuracy-guard", "--max-batch-size", "8"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "bundle " in result.output and "triton repository" in result.output
    assert "ner-intent_ensemble/  (text -> ner-intent_tokenizer -> ner-intent_onnx)" in result.output
    assert parse_config(tmp_path / "a" / "ner-intent" / "config.pbtxt").max_batch_size == 8
    load_bundle(tmp_path / "a" / "ner-intent" / "1" / "bundle", verify=True)

    args = ["-o", str(tmp_path / "b"), "--format", "triton", "--from-bundle", str(tiny_bundle)]
    extra = ["--no-dynamic-batching", "--triton-instances", "3", "--triton-param", "min_entity_score=0.5"]
    result = CliRunner().invoke(main, [*args, *extra])
    assert result.exit_code == 0, result.output
    c = parse_config(tmp_path / "b" / "mtst" / "config.pbtxt")
    assert not c.HasField("dynamic_batching") and c.instance_group[0].count == 3
    assert c.parameters["min_entity_score"].string_value == "0.5"
    result = CliRunner().invoke(main, [*args, "--overwrite", "--triton-device", "gpu", "--tensorrt"])
    assert result.exit_code == 0, result.output
    assert parse_config(tmp_path / "b" / "mtst_onnx" / "config.pbtxt").optimization.execution_accelerators


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "x", "--from-bundle", "b"], "--from-bundle writes a Triton repository: add --format triton"),
        (["-o", "x", "--format", "triton"], "give either CHECKPOINT or --from-bundle BUNDLE"),
        (
            ["ck", "-o", "x", "--format", "triton", "--from-bundle", "b"],
            "give either CHECKPOINT or --from-bundle",
        ),
        (["-o", "x", "--format", "triton", "--from-bundle", "b", "--quantize", "int8"], "with --from-bundle"),
        (["-o", "x"], "Missing argument 'CHECKPOINT'"),
        (["-o", "x", "--format", "triton", "--from-bundle", "b", "--tensorrt"], "runs on GPU instances"),
        (
            ["-o", "x", "--format", "triton", "--from-bundle", "b", "--triton-param", "x"],
            "expected KEY=VALUE",
        ),
        (
            ["-o", "x", "--format", "triton", "--from-bundle", "b", "--triton-param", "threads=2"],
            "text_parameters: ['threads'] are not known",
        ),
    ],
)
def test_cli_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and message in result.output, result.output


def test_pbtxt_strings_and_enums(tmp_path: Path) -> None:
    text = to_pbtxt(
        {
            "name": 'quote " and \\ and ü',
            "max_batch_size": 4,
            "input": [{"name": "text", "data_type": Ident("TYPE_STRING"), "dims": [1]}],
            "dynamic_batching": {"preferred_batch_size": [2, 4], "max_queue_delay_microseconds": 0},
            "parameters": [{"key": "k", "value": {"string_value": "v"}}],
            "output": None,
        }
    )
    path = tmp_path / "config.pbtxt"
    path.write_text(text, encoding="utf-8")
    c = parse_config(path)
    assert c.name == 'quote " and \\ and ü' and c.input[0].data_type == 13
    assert list(c.dynamic_batching.preferred_batch_size) == [2, 4] and c.parameters["k"].string_value == "v"
    with pytest.raises(TypeError, match="cannot write a bytes"):
        to_pbtxt({"name": b"x"})
