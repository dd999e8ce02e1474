"""The corruption corpus (tests/reliability/_bundle_corpus.py) against ``Engine.load``: every case refused.

Each case is a clone of a real exported bundle with one defect. ``Engine.load`` must raise a
``BundleError`` naming the bundle folder or ``manifest.json``, no other exception type, and open no
file but ``manifest.json`` and the files listed in it (recorded by an audit hook: the runtime reads
every file in Python and hands bytes to ONNX Runtime and tokenizers). The figures (cases, refused,
untyped, accepted, outside opens, slowest case) are printed and, with ``MTST_RELIABILITY_OUT`` set,
written there as ``bundle-corpus.json`` (docs/reliability.md cites them).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
from _bundle_corpus import Case, corpus
from _bundle_fixtures import OpenRecorder, Outcome, clone, outside_opens

from mtst.errors import BundleError
from mtst.runtime.engine import Engine


def run_case(case: Case, base: Path, work: Path, recorder: OpenRecorder) -> Outcome:
    bundle = clone(base, work / "bundle")
    scratch = work / "scratch"
    scratch.mkdir()
    case.build(bundle, scratch)
    result, error = "accepted", ""
    start = time.perf_counter()
    with recorder.recording() as paths:
        try:
            Engine.load(bundle, providers=["cpu"])
        except BundleError as exc:
            result, error = "refused", str(exc)
        except Exception as exc:
            result, error = "untyped", f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    named = str(Path(os.path.realpath(bundle))) in error or "manifest.json" in error or str(bundle) in error
    outside = tuple(outside_opens(paths, bundle))
    return Outcome(case.name, case.category, result, error[:300], seconds, outside, named)


def _figures(outcomes: list[Outcome]) -> dict[str, object]:
    slowest = max(outcomes, key=lambda o: o.seconds)
    return {
        "cases": len(outcomes),
        "refused": sum(o.result == "refused" for o in outcomes),
        "untyped": sum(o.result == "untyped" for o in outcomes),
        "accepted": sum(o.result == "accepted" for o in outcomes),
        "refusals_naming_file_or_field": sum(o.named for o in outcomes if o.result == "refused"),
        "outside_opens": sum(len(o.outside) for o in outcomes),
        "max_seconds": round(slowest.seconds, 3),
        "slowest_case": slowest.case,
        "categories": dict(Counter(o.category for o in outcomes)),
    }


@pytest.mark.timeout(600)
def test_every_corrupt_bundle_is_refused_typed_and_opens_nothing_else(
    rel_bundle: Path, tmp_path: Path, open_recorder: OpenRecorder
) -> None:
    Engine.load(rel_bundle, providers=["cpu"])  # the good bundle loads (and lazy imports are done)
    cases = corpus(rel_bundle)
    assert len(cases) >= 300
    outcomes = []
    for i, case in enumerate(cases):
        work = tmp_path / f"case{i}"
        outcomes.append(run_case(case, rel_bundle, work, open_recorder))
        shutil.rmtree(work, ignore_errors=True)
    figures = _figures(outcomes)
    print("bundle corpus:", json.dumps(figures))
    out = os.environ.get("MTST_RELIABILITY_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "bundle-corpus.json").write_text(json.dumps(figures, indent=2) + "\n")
    bad = [o for o in outcomes if o.result != "refused" or o.outside or not o.named]
    assert not bad, "\n".join(f"{o.case} [{o.category}]: {o.result} {o.error} {list(o.outside)}" for o in bad)
