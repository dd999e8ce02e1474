"""``events.jsonl`` of an experiment: the order in which things happened (the test-split check reads it)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["EventLog"]


class EventLog:
    """One JSON record a line: sequence number, time, event name and its fields."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seq = 0
        if path.exists():
            self.seq = sum(1 for _ in path.open(encoding="utf-8"))

    def add(self, event: str, **fields: Any) -> None:
        self.seq += 1
        record = {"seq": self.seq, "time": round(time.time(), 3), "event": event, **fields}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
