"""``mtst-export --trt-profiles-from FILE``: TensorRT shape profiles from real sentences, into the manifest.

The profiles (:mod:`mtst.runtime.trt`) depend only on the bundle's tokenizer and ``max_seq_len``, so
they are added to a written bundle: ``manifest.json`` gets ``trt_profiles`` (the manifest lists no
hash of itself, so every file's sha256 stays valid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from mtst.runtime.batching import AUTO_BATCH_TOKENS
from mtst.runtime.bundle import load_bundle
from mtst.runtime.manifest import MANIFEST_NAME
from mtst.runtime.providers import Provider
from mtst.runtime.shape_profiles import TrtProfiles
from mtst.runtime.tokenize import TextTokenizer
from mtst.runtime.trt import lengths_from_file, profiles_from_lengths

__all__ = ["add_trt_profiles"]


def add_trt_profiles(
    bundle_dir: str | Path,
    sentences: str | Path,
    *,
    max_batch: int = 32,
    batch_tokens: int = AUTO_BATCH_TOKENS[Provider.TENSORRT],
    cuts: Sequence[float] = (),
) -> TrtProfiles:
    """Compute profiles from the token lengths of ``sentences`` and write them into the bundle's manifest.

    ``max_batch``/``batch_tokens``: the engine's ``batch_size``/``max_batch_tokens`` on TensorRT;
    ``cuts``: length quantiles that split the sequence range into several profiles.
    """
    b = load_bundle(bundle_dir)
    m = b.manifest
    tok = TextTokenizer.from_file(
        b.tokenizer_path, max_seq_len=m.max_seq_len, pad_token_id=m.pad_token_id, input_names=m.inputs
    )
    profiles = profiles_from_lengths(
        lengths_from_file(sentences, tok),
        max_seq_len=m.max_seq_len,
        max_batch=max_batch,
        batch_tokens=batch_tokens,
        cuts=cuts,
    )
    (b.root / MANIFEST_NAME).write_text(replace(m, trt_profiles=profiles).to_json(), encoding="utf-8")
    return profiles
