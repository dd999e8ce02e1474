"""The atheris fuzz run over the manifest parser and bundle loader, bounded in time, and its corpus replayed.

``test_fuzz_bundle_for_a_bounded_time`` runs _bundle_fuzz.py for ``MTST_FUZZ_SECONDS`` (default 60;
CI may lengthen it) starting from the seeds in fuzz_corpus/ (new inputs go to a temporary folder,
never into the repository). A finding fails the test and names the input file libFuzzer wrote; copy
it into fuzz_corpus/ (``finding-<what>``) and fix the loader: ``test_fuzz_corpus_replays_typed``
then replays it on every run, with or without atheris installed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
CORPUS = HERE / "fuzz_corpus"


def test_fuzz_corpus_is_small_and_present() -> None:
    files = sorted(CORPUS.iterdir())
    assert len(files) >= 10
    assert all(f.stat().st_size <= 64 * 1024 for f in files)


def test_fuzz_corpus_replays_typed(rel_bundle: Path) -> None:
    """Every seed and every past finding: refused with a BundleError or loaded and answering."""
    import _bundle_fuzz

    _bundle_fuzz.setup(rel_bundle)
    results = {f.name: _bundle_fuzz.one_input(f.read_bytes()) for f in sorted(CORPUS.iterdir())}
    assert set(results.values()) <= {"refused", "loaded"}
    assert "loaded" in results.values() and "refused" in results.values()


@pytest.mark.timeout(900)
def test_fuzz_bundle_for_a_bounded_time(rel_bundle: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (pip install 'mtst[dev]' brings it)")
    seconds = int(os.environ.get("MTST_FUZZ_SECONDS", "60"))
    new = tmp_path / "new"
    new.mkdir()
    cmd = [
        sys.executable, str(HERE / "_bundle_fuzz.py"), str(rel_bundle),
        f"-max_total_time={seconds}", "-timeout=20", "-rss_limit_mb=3072", "-max_len=65536",
        f"-artifact_prefix={tmp_path}/", "-print_final_stats=1", str(new), str(CORPUS),
    ]  # fmt: skip
    # libFuzzer's -rss_limit_mb reads the process's peak RSS (ru_maxrss), which Linux carries from the
    # forking process across exec: started from a pytest process holding 3 GB of models, the fuzzer
    # "used" 3 GB before its first input (CI failed so). A small Python in between forks it afresh,
    # so the limit measures the fuzzer's own memory.
    cmd = [sys.executable, "-c", "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))", *cmd]
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]),
    }
    res = subprocess.run(cmd, capture_output=True, env=env, timeout=seconds + 600)
    log = res.stderr.decode(errors="replace")
    findings = sorted(
        p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-", "leak-"))
    )
    runs = [line for line in log.splitlines() if "stat::number_of_executed_units" in line]
    print("fuzz:", runs[-1].strip() if runs else "?", f"({seconds} s)")
    assert res.returncode == 0 and not findings, f"findings {findings} in {tmp_path}\n{log[-4000:]}"
