"""mtst.runtime: run an mtst bundle with ONNX Runtime, without torch.

::

    from mtst.runtime import Engine
    engine = Engine.load("bundle/", providers="auto")
    engine.predict(["Great movie!"])[0].heads["sentiment"].label

Imports numpy, onnxruntime, tokenizers and the standard library only (edge devices have no torch).
"""

from __future__ import annotations

import os

# ONNX Runtime 1.29+ writes a device id and an offline event store under the user's cache and uploads
# telemetry unless ORT_DISABLE_TELEMETRY is set when it initializes (disable_telemetry_events() only
# stops later events): set it before any runtime module imports onnxruntime. A caller's own value wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from mtst.runtime.bundle import Bundle, load_bundle, verify_bundle
from mtst.runtime.decode import Entity
from mtst.runtime.engine import Engine
from mtst.runtime.manifest import Layout, Manifest, Precision
from mtst.runtime.providers import GraphOptimization, Provider
from mtst.runtime.results import Prediction, SentenceLabel, TokenEntities

__all__ = [
    "Bundle",
    "Engine",
    "Entity",
    "GraphOptimization",
    "Layout",
    "Manifest",
    "Precision",
    "Prediction",
    "Provider",
    "SentenceLabel",
    "TokenEntities",
    "load_bundle",
    "verify_bundle",
]
