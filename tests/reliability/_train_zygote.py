"""A process that imports the training stack once and forks one child per ``mtst-train`` command.

Run as a script; reads JSON argument lists on stdin, one a line; for each it forks a child that runs
``mtst-train`` with them and prints ``{"pid": ...}`` at once, then ``{"pid": ..., "status": ...}``
when the child ends (killed or not). Thirty SIGKILLs of a training run cost a fork each instead of a
fresh interpreter importing torch. Forked before any torch op: torch's thread pool is not started.
"""

from __future__ import annotations

import json
import os
import sys

import torch

torch.set_num_threads(1)

import mtst.train  # noqa: E402,F401 - imported once, inherited by every child
from mtst.cli import main  # noqa: E402


def _child(args: list[str]) -> None:
    code = 0
    try:
        main(args, standalone_mode=False)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:
        print(f"child failed: {exc!r}", file=sys.stderr, flush=True)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve() -> None:
    for line in sys.stdin:
        args = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(args)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "status": status}), flush=True)


if __name__ == "__main__":
    serve()
