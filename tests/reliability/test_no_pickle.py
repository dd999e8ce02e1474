"""No pickle is ever loaded: malicious pickles (a ``__reduce__`` that writes a marker file), as raw
pickles and in torch's zip format, planted in a training checkpoint (``training_state/``, ``*.bin`` and
``*.pt`` beside the safetensors), an HF encoder folder (``pytorch_model.bin``, ``training_args.bin``)
and a bundle, then every mtst entry point that reads those folders: ``mtst-train --resume``,
``mtst-export``, ``mtst-predict``, ``Engine.load``, ``MultiTaskModel.from_pretrained``. Each may
succeed or refuse with an MtstError; the marker never appears."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import yaml
from _fixtures_text import bench_corpus_lines, text_bundle, text_checkpoint, train_config, train_data  # noqa: F401
from click.testing import CliRunner

from mtst.errors import MtstError

PICKLE_NAMES = ["pytorch_model.bin", "training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                "model.pt", "state.pkl", "tokenizer.pkl", "data.pickle"]  # fmt: skip


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # runs on unpickling
        return (exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",))


def plant(folder: Path, marker: Path) -> list[Path]:
    """Malicious pickles under every pickle-ish name in ``folder`` (raw and torch-zip), and in a
    ``training_state/`` subfolder when there is one."""
    import torch

    planted = []
    targets = [folder] + [p for p in folder.rglob("*") if p.is_dir()]
    for d in targets:
        for i, name in enumerate(PICKLE_NAMES):
            path = d / name
            if path.exists():
                continue
            if i % 2:
                path.write_bytes(pickle.dumps(_Payload(marker)))
            else:
                torch.save({"state": _Payload(marker)}, path)  # the zip format torch.load reads
            planted.append(path)
    return planted


def _check(marker: Path, what: str, outcome: object) -> str:
    assert not marker.exists(), f"{what}: a planted pickle was unpickled"
    if isinstance(outcome, BaseException):
        assert isinstance(outcome, MtstError | SystemExit), f"{what}: {outcome!r}"
        return f"refused ({type(outcome).__name__})"
    return "ran"


def _try(fn) -> object:
    try:
        return fn()
    except BaseException as exc:
        return exc


def _cli(command, args: list[str]) -> object:
    res = CliRunner().invoke(command, args, catch_exceptions=True)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        return res.exception
    return None if res.exit_code == 0 else SystemExit(res.exit_code)


def test_planted_pickles_are_never_loaded(
    tiny_encoder_dir: Path,
    train_data: Path,
    text_checkpoint: Path,
    text_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mtst.cli import main as train_main
    from mtst.export.cli import main as export_main
    from mtst.model import MultiTaskModel
    from mtst.runtime.cli import main as predict_main
    from mtst.runtime.engine import Engine

    marker = tmp_path / "MARKER"
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    outcomes: dict[str, str] = {}

    # an HF encoder folder with pickles beside model.safetensors
    encoder = tmp_path / "encoder"
    shutil.copytree(tiny_encoder_dir, encoder)
    n = len(plant(encoder, marker))
    outcomes["from_pretrained(HF folder)"] = _check(
        marker, "from_pretrained", _try(lambda: MultiTaskModel.from_pretrained(encoder))
    )
    # a run on that encoder, 4 steps, then pickles in its checkpoints, then --resume to 6
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(train_config(encoder, train_data, max_steps=4)))
    run = tmp_path / "run"
    outcomes["mtst-train (HF folder)"] = _check(
        marker, "mtst-train", _cli(train_main, [str(config), "--output", str(run), "--quiet"])
    )
    n += len(plant(run, marker))
    outcomes["mtst-train --resume"] = _check(
        marker,
        "mtst-train --resume",
        _cli(train_main, [str(config), "--output", str(run), "--resume", "--max-steps", "6", "--quiet"]),
    )
    # the checkpoint of the model the bundles come from, with pickles, exported
    ckpt = tmp_path / "ckpt"
    shutil.copytree(text_checkpoint, ckpt)
    n += len(plant(ckpt, marker))
    outcomes["from_pretrained(checkpoint)"] = _check(
        marker, "from_pretrained(checkpoint)", _try(lambda: MultiTaskModel.from_pretrained(ckpt))
    )
    outcomes["mtst-export"] = _check(
        marker,
        "mtst-export",
        _cli(
            export_main,
            [
                str(ckpt),
                "--out",
                str(tmp_path / "exported"),
                "--no-parity-check",
                "--no-accuracy-guard",
                "--no-progress",
            ],
        ),
    )
    # a bundle with pickles beside its graphs
    bundle = tmp_path / "bundle"
    shutil.copytree(text_bundle, bundle)
    n += len(plant(bundle, marker))
    outcomes["Engine.load"] = _check(
        marker, "Engine.load", _try(lambda: Engine.load(bundle, providers="cpu").predict(["hi"]))
    )
    outcomes["mtst-predict"] = _check(marker, "mtst-predict", _cli(predict_main, [str(bundle), "hello Anna"]))
    print(f"\nno pickle: {n} planted pickles, {len(outcomes)} entry points, none unpickled: {outcomes}")
    assert not marker.exists()
    # the payload works: loading one the unsafe way does write the marker
    pickle.loads((encoder / "training_args.bin").read_bytes())
    assert marker.exists()
