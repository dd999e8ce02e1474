"""TensorRT optimization profiles as the manifest stores them (``trt_profiles``) and as ONNX Runtime's
TensorRT provider takes them. Standard library only (the manifest reads them); computed from data by
:mod:`mtst.runtime.trt`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mtst.errors import BundleError, ConfigError

__all__ = ["ShapeProfile", "TrtProfiles", "profile_options"]


@dataclass(frozen=True, slots=True)
class ShapeProfile:
    """One TensorRT optimization profile of the token inputs: (batch, sequence) at min, opt and max."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]

    def __post_init__(self) -> None:
        for i in range(2):
            if not 1 <= self.min[i] <= self.opt[i] <= self.max[i]:
                raise ConfigError(
                    f"trt profile: expected 1 <= min <= opt <= max in every axis, got "
                    f"min {self.min}, opt {self.opt}, max {self.max}"
                )

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ShapeProfile:
        shapes = []
        for key in ("min", "opt", "max"):
            value = d.get(key) if isinstance(d, dict) else None
            if (
                not isinstance(value, list)
                or len(value) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in value)
            ):
                raise BundleError(f"manifest.json: {where}.{key}: expected [batch, sequence], got {value!r}")
            shapes.append((value[0], value[1]))
        try:
            return cls(*shapes)
        except ConfigError as exc:
            raise BundleError(f"manifest.json: {where}: {exc}") from None


@dataclass(frozen=True, slots=True)
class TrtProfiles:
    """The manifest's ``trt_profiles``: the profiles and where they came from."""

    profiles: tuple[ShapeProfile, ...]
    sentences: int  # sample size
    length_quantiles: dict[str, int] = field(default_factory=dict)  # "p50" -> tokens, ..., "max"

    def to_dict(self) -> dict[str, Any]:
        return {
            "profiles": [p.to_dict() for p in self.profiles],
            "sentences": self.sentences,
            "length_quantiles": dict(self.length_quantiles),
        }

    @classmethod
    def from_dict(cls, d: Any) -> TrtProfiles:
        where = "trt_profiles"
        if not isinstance(d, dict) or not isinstance(d.get("profiles"), list) or not d["profiles"]:
            raise BundleError(f"manifest.json: {where}: expected an object with a non-empty 'profiles' list")
        return cls(
            profiles=tuple(
                ShapeProfile.from_dict(p, f"{where}.profiles[{i}]") for i, p in enumerate(d["profiles"])
            ),
            sentences=int(d.get("sentences", 0)),
            length_quantiles={str(k): int(v) for k, v in dict(d.get("length_quantiles", {})).items()},
        )


def profile_options(profiles: Sequence[ShapeProfile], inputs: Sequence[str]) -> dict[str, str]:
    """``trt_profile_{min,opt,max}_shapes`` for token inputs ``inputs`` (each ``[batch, sequence]``)."""
    if not profiles:
        return {}
    options = {}
    for key in ("min", "opt", "max"):
        shapes = [getattr(p, key) for p in profiles]
        options[f"trt_profile_{key}_shapes"] = ",".join(
            f"{name}:{b}x{s}" for b, s in shapes for name in inputs
        )
    return options
