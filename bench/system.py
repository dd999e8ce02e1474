"""Facts about the machine and the software a benchmark ran on, recorded in every report.

Torch-free: library versions are read from package metadata, never by importing the library (an
import would change the memory and start-up figures the benchmark measures).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["SystemInfo", "collect_system_info", "cpu_info", "load_average", "package_versions"]

# CPU flags that decide which kernels ONNX Runtime and torch pick for fp32 / int8 / fp16 work.
RELEVANT_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",  # aarch64
    "asimddp",
    "sve",
)

PACKAGES = (
    "mtst",
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "tokenizers",
    "onnx",
    "torch",
    "transformers",
    "optimum",
    "optimum-onnx",
    "sentence-transformers",
    "ctranslate2",
    "fastembed",
    "openvino",  # in this environment; the OpenVINO peers' own environment is in their facts
    "optimum-intel",
)


@dataclass(frozen=True, slots=True)
class SystemInfo:
    cpu_model: str
    cpu_flags: tuple[str, ...]  # the relevant ones present (see RELEVANT_FLAGS)
    logical_cpus: int
    usable_cpus: int  # the process's affinity mask
    memory_total_mb: float | None
    platform: str
    python: str
    versions: dict[str, str] = field(default_factory=dict)  # installed packages, absent ones left out
    load_average: tuple[float, float, float] | None = None  # at collection time: a busy machine skews timings

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cpu_flags"] = list(self.cpu_flags)
        d["load_average"] = list(self.load_average) if self.load_average else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SystemInfo:
        load = d.get("load_average")
        return cls(**{**d, "cpu_flags": tuple(d["cpu_flags"]), "load_average": tuple(load) if load else None})


def cpu_info(path: Path = Path("/proc/cpuinfo")) -> tuple[str, tuple[str, ...]]:
    """CPU model name and the relevant flags, from /proc/cpuinfo (Linux) or platform (elsewhere)."""
    model = platform.processor() or platform.machine() or "unknown"
    flags: set[str] = set()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return model, ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, tuple(f for f in RELEVANT_FLAGS if f in flags)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def load_average() -> tuple[float, float, float] | None:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:  # pragma: no cover - not on Linux/macOS
        return None
    return (round(one, 2), round(five, 2), round(fifteen, 2))


def _memory_total_mb() -> float | None:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is in the bench extra
        try:
            pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
        return round(pages * size / 2**20, 1)
    return round(psutil.virtual_memory().total / 2**20, 1)


def collect_system_info() -> SystemInfo:
    model, flags = cpu_info()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        usable = os.cpu_count() or 1
    return SystemInfo(
        cpu_model=model,
        cpu_flags=flags,
        logical_cpus=os.cpu_count() or 1,
        usable_cpus=usable,
        memory_total_mb=_memory_total_mb(),
        platform=platform.platform(),
        python=sys.version.split()[0],
        versions=package_versions(),
        load_average=load_average(),
    )
