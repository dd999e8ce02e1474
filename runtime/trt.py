"""TensorRT: shape profiles from the data's token lengths, their provider options, the engine cache folder.

TensorRT builds an engine for a range of input shapes (a *profile*: min, opt and max shape of every
dynamic input); the kernels are tuned at ``opt``. Without explicit profiles ONNX Runtime's TensorRT
provider builds for the first shapes it sees and rebuilds (seconds to minutes) whenever a batch falls
outside, so on a serving path every new (batch, sequence) maximum costs a rebuild. Here the profiles
come from the token lengths of a sample of real sentences:

- the sequence range ``1..max_seq_len`` is cut at the given length quantiles (default none: one
  profile); each profile's ``opt`` sequence is the median length of the sample's sentences in its range,
  and its ``opt`` batch what the batcher makes of such sentences (``batch_tokens // length``, at most
  ``max_batch``); batches run from 1 to ``max_batch``;
- the profiles go into the manifest (``trt_profiles``: the profiles and the length quantiles of the
  sample) at export (``mtst-export --trt-profiles-from FILE``) or are computed when an engine loads
  (``Engine.load(trt_profiles_from=FILE)``), and reach ONNX Runtime as ``trt_profile_min_shapes`` /
  ``trt_profile_opt_shapes`` / ``trt_profile_max_shapes`` (``name:BxS,...``; several profiles repeat the
  names), for the graphs that take token inputs (the heads graphs keep ONNX Runtime's own ranges);
- built engines are cached per bundle, GPU and TensorRT version (:func:`cache_folder`): an engine built
  for another GPU or TensorRT release is never loaded.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.metadata
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtst.errors import ConfigError
from mtst.runtime.bundle import Bundle
from mtst.runtime.manifest import MANIFEST_NAME, sha256_file
from mtst.runtime.providers import SessionSettings
from mtst.runtime.shape_profiles import ShapeProfile, TrtProfiles
from mtst.runtime.texts import read_sentences
from mtst.runtime.tokenize import TextTokenizer

__all__ = [
    "SAMPLE_LIMIT",
    "cache_folder",
    "gpu_name",
    "lengths_from_file",
    "profiles_from_lengths",
    "tensorrt_settings",
    "tensorrt_version",
]

logger = logging.getLogger(__name__)

SAMPLE_LIMIT = 5000  # sentences read from a --trt-profiles-from file (spread over the file)
QUANTILES = (0.5, 0.9, 0.99)  # length quantiles recorded with the profiles


def _quantile(lengths: np.ndarray, q: float) -> int:
    """The smallest length at or below which a share ``q`` of the sentences fall (a length that occurs)."""
    return int(np.quantile(lengths, q, method="inverted_cdf"))


def profiles_from_lengths(
    lengths: Sequence[int] | np.ndarray,
    *,
    max_seq_len: int,
    max_batch: int,
    batch_tokens: int,
    cuts: Sequence[float] = (),
) -> TrtProfiles:
    """Profiles for token ``lengths`` (special tokens included): one per range of ``1..max_seq_len`` cut
    at the length quantiles ``cuts`` (e.g. ``(0.5, 0.9)``: three profiles), batch ``1..max_batch``."""
    lens = np.minimum(np.asarray(lengths, dtype=np.int64), max_seq_len)
    if lens.size == 0 or lens.min() < 1:
        raise ConfigError("trt profiles: expected token lengths >= 1 of at least one sentence")
    for name, value in (
        ("max_seq_len", max_seq_len),
        ("max_batch", max_batch),
        ("batch_tokens", batch_tokens),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"trt profiles: {name}: expected an integer >= 1, got {value!r}")
    if any(not 0.0 < q < 1.0 for q in cuts):
        raise ConfigError(
            f"trt profiles: cuts: expected quantiles strictly between 0 and 1, got {list(cuts)}"
        )
    edges = sorted({_quantile(lens, q) for q in cuts} - {max_seq_len})
    profiles = []
    low = 1
    for high in [*edges, max_seq_len]:
        inside = lens[(lens >= low) & (lens <= high)]
        opt_seq = _quantile(inside, 0.5) if inside.size else high
        opt_seq = min(max(opt_seq, low), high)
        opt_batch = max(1, min(max_batch, batch_tokens // opt_seq))
        profiles.append(ShapeProfile(min=(1, low), opt=(opt_batch, opt_seq), max=(max_batch, high)))
        low = high + 1
    quantiles = {f"p{round(q * 100)}": _quantile(lens, q) for q in QUANTILES}
    quantiles["max"] = int(lens.max())
    return TrtProfiles(profiles=tuple(profiles), sentences=int(lens.size), length_quantiles=quantiles)


def lengths_from_file(path: str | Path, tokenizer: TextTokenizer, *, limit: int = SAMPLE_LIMIT) -> np.ndarray:
    """Token lengths (truncated at the tokenizer's max_seq_len) of up to ``limit`` sentences of ``path``."""
    encs, _ = tokenizer.encode(read_sentences(path, limit=limit))
    return np.fromiter((len(e) for e in encs), dtype=np.int64, count=len(encs))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "unknown"


def cache_folder(root: str | Path, *, bundle_sha256: str, gpu: str, tensorrt: str) -> Path:
    """``root/<bundle sha256, 16 hex>/<gpu>-trt<version>``: engines of one bundle on one GPU and release."""
    if not re.fullmatch(r"[0-9a-f]{16,64}", bundle_sha256):
        raise ConfigError(f"trt cache: bundle_sha256: expected hex digits, got {bundle_sha256!r}")
    return Path(root) / bundle_sha256[:16] / f"{_slug(gpu)}-trt{_slug(tensorrt)}"


def gpu_name(device_id: int = 0) -> str:
    """The NVIDIA driver's name of GPU ``device_id`` ("NVIDIA H200"), or "unknown-gpu" (no torch needed)."""
    infos = sorted(Path("/proc/driver/nvidia/gpus").glob("*/information"))
    if device_id < len(infos):
        for line in infos[device_id].read_text(errors="replace").splitlines():
            if line.startswith("Model:"):
                return line.split(":", 1)[1].strip()
    return "unknown-gpu"


def tensorrt_version() -> str:
    """The TensorRT release ONNX Runtime would load ("10.9.0"), or "unknown"."""
    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-libs", "tensorrt-cu12-libs"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        lib = ctypes.CDLL("libnvinfer.so.10")
    except OSError:
        return "unknown"
    v = int(lib.getInferLibVersion())  # major * 10000 + minor * 100 + patch (TensorRT 10)
    return f"{v // 10000}.{v // 100 % 100}.{v % 100}"


def tensorrt_settings(
    settings: SessionSettings,
    bundle: Bundle,
    *,
    profiles_from: str | Path | None,
    batch_size: int,
    batch_tokens: int | None,
) -> SessionSettings:
    """``settings`` for TensorRT sessions on ``bundle``: the profiles (computed from the sentences of
    ``profiles_from`` for this batch size and token bound, else the manifest's ``trt_profiles``) and the
    engine cache folder under ``settings.trt_cache_dir`` keyed by bundle, GPU and TensorRT release."""
    m = bundle.manifest
    profiles = m.trt_profiles
    changes: dict[str, Any] = {}
    if profiles_from is not None and m.tokenizer:
        tok = TextTokenizer.from_file(
            bundle.tokenizer_path,
            max_seq_len=m.max_seq_len,
            pad_token_id=m.pad_token_id,
            input_names=m.inputs,
        )
        profiles = profiles_from_lengths(
            lengths_from_file(profiles_from, tok),
            max_seq_len=m.max_seq_len,
            max_batch=batch_size,
            batch_tokens=batch_tokens or batch_size * m.max_seq_len,
        )
    if profiles is not None:
        top = max(p.max[0] for p in profiles.profiles)
        if top < batch_size:
            logger.warning(
                "%s: trt_profiles allow batches of up to %d, the engine makes up to %d: TensorRT rebuilds "
                "its engine for larger ones (pass trt_profiles_from= to fit the profiles to this engine)",
                bundle.root,
                top,
                batch_size,
            )
        changes.update(trt_profiles=profiles.profiles, trt_profile_inputs=m.inputs)
    if settings.trt_cache_dir is not None:
        changes["trt_cache_dir"] = cache_folder(
            settings.trt_cache_dir,
            bundle_sha256=sha256_file(bundle.root / MANIFEST_NAME),
            gpu=gpu_name(),
            tensorrt=tensorrt_version(),
        )
    return dataclasses.replace(settings, **changes)
