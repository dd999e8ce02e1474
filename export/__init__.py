"""mtst.export: checkpoint -> ONNX bundle (dynamic axes, fusion, int8/fp16, accuracy guard, parity).

::

    from mtst.export import export_bundle
    report = export_bundle("runs/x/best", "bundle/", quantize=["none", "int8"])
    print(report.summary())

A bundle is verified by the runtime's own verifier: ``mtst.runtime.verify_bundle(path)``.
"""

from __future__ import annotations

from .bundle import ExportReport, VariantReport, encoder_fingerprint
from .heads_only import export_heads
from .pipeline import export_bundle

__all__ = [
    "ExportReport",
    "VariantReport",
    "encoder_fingerprint",
    "export_bundle",
    "export_heads",
]
