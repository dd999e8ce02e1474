"""Protobuf text format for Triton's ``config.pbtxt``, from plain Python values.

A message is a dict (field -> value, in writing order); a list is a repeated field; :class:`Ident`
is an enum value (written bare: ``TYPE_FP32``); str, int, float and bool are scalars. Map fields
(``parameters``) are lists of ``{"key": ..., "value": ...}`` entries, as the text format writes them.
The schema check is left to the reader: tests parse every file with the ``ModelConfig`` message that
``tritonclient`` carries.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Ident", "to_pbtxt"]


class Ident(str):
    """An enum value of the schema, written without quotes."""


def _scalar(value: Any) -> str:
    if isinstance(value, Ident):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"config.pbtxt: {value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid text-format string
    raise TypeError(f"config.pbtxt: cannot write a {type(value).__name__} ({value!r})")


def _fields(message: Mapping[str, Any], indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    for key, value in message.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            lines += [f"{pad}{key} {{", *_fields(value, indent + 1), f"{pad}}}"]
        elif isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
            if all(not isinstance(v, Mapping) for v in value):
                lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
            else:
                for item in value:
                    lines += [f"{pad}{key} {{", *_fields(item, indent + 1), f"{pad}}}"]
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return lines


def to_pbtxt(message: Mapping[str, Any]) -> str:
    """The text format of ``message`` (see the module docstring), newline-terminated."""
    return "\n".join(_fields(message, 0)) + "\n"
