"""Start a real Triton server on loopback for a repository written by ``mtst-export --format triton``.

For tests and measurements on a machine without Triton's container: the PyPI package
``nvidia-pytriton`` (0.7.0) carries a ``tritonserver`` binary (2.51) with the Python backend (no
ONNX Runtime backend), which runs on CPU. What it takes to start it outside its own wrapper:

- the Python backend stub for the server Python's version (``python_backend_stubs/3.X``) must sit
  beside ``libtriton_python.so``: a temporary backends folder holds links to both;
- the stub runs its own embedded Python and takes ``sys.path`` from the first ``python3`` on
  ``PATH``: the server environment's ``bin`` goes first, and that environment holds the base install
  of mtst (numpy, onnxruntime, tokenizers) -- with numpy < 2, because this stub hands
  ``TYPE_STRING`` tensors to numpy 2 garbled;
- ``LD_LIBRARY_PATH`` needs ``nvidia_pytriton.libs`` and the folder of ``libpython3.X.so``;
- ``--exit-timeout-secs`` bounds the shutdown.

The server environment is ``$MTST_TRITON_ENV`` (a virtual environment with nvidia-pytriton and mtst
installed, see .ci/run) unless given. :class:`LocalTritonServer` is a context manager that always
stops the server (and its stub processes, one process group) when the block ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mtst.errors import ConfigError, MtstError

__all__ = ["ENV_VAR", "LocalTritonServer", "ServerEnvironment", "TritonStartError", "free_port"]

ENV_VAR = "MTST_TRITON_ENV"


class TritonStartError(MtstError):
    """The server exited or did not become ready in time (the message holds the end of its log)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class ServerEnvironment:
    """A Python environment holding nvidia-pytriton's server and the mtst runtime."""

    root: Path  # the virtual environment
    python_version: str  # "3.11"
    site_packages: Path
    libdir: Path  # folder of libpython3.X.so

    @classmethod
    def find(cls, root: str | Path | None = None) -> ServerEnvironment:
        given = root if root is not None else os.environ.get(ENV_VAR)
        if not given:
            raise ConfigError(
                f"no Triton server environment: set {ENV_VAR} to a virtual environment with "
                f"'nvidia-pytriton==0.7.0' (installed --no-deps), 'numpy<2' and mtst (see .ci/run)"
            )
        env = Path(given).expanduser().resolve()
        python = env / "bin" / "python3"
        if not python.exists():
            raise ConfigError(f"{ENV_VAR}={env}: no bin/python3 (not a virtual environment)")
        probe = (
            "import json, sys, sysconfig, site;"
            "print(json.dumps([f'{sys.version_info[0]}.{sys.version_info[1]}', site.getsitepackages()[0],"
            " sysconfig.get_config_var('LIBDIR')]))"
        )
        version, site, libdir = json.loads(
            subprocess.run([str(python), "-c", probe], check=True, capture_output=True, text=True).stdout
        )
        found = cls(root=env, python_version=version, site_packages=Path(site), libdir=Path(libdir))
        if not found.server_binary.is_file():
            raise ConfigError(
                f"{env}: {found.server_binary} missing: pip install --no-deps nvidia-pytriton==0.7.0 there"
            )
        if not found.stub.is_file():
            raise ConfigError(f"{env}: no Python backend stub for Python {version} ({found.stub})")
        return found

    @property
    def server_home(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver"

    @property
    def server_binary(self) -> Path:
        return self.server_home / "bin" / "tritonserver"

    @property
    def stub(self) -> Path:
        return self.server_home / "python_backend_stubs" / self.python_version / "triton_python_backend_stub"

    def backends(self, dest: Path) -> Path:
        """A backends folder at ``dest`` whose ``python/`` links the backend and the matching stub."""
        python_dir = dest / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        for src in [*(self.server_home / "backends" / "python").iterdir(), self.stub]:
            link = python_dir / src.name
            if not link.exists():
                link.symlink_to(src)
        return dest

    def process_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(self.root / "bin"), env.get("PATH", "")])
        libs = [str(self.site_packages / "nvidia_pytriton.libs"), str(self.libdir)]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONHOME", None)
        env.pop("PYTHONPATH", None)
        return env


class LocalTritonServer:
    """``tritonserver`` on 127.0.0.1 (free ports) serving ``models`` from ``repository``.

    ::

        with LocalTritonServer(repo, models=["mtst"]) as server:
            server.wait_ready()
            client = tritonclient.http.InferenceServerClient(server.http_url)
    """

    def __init__(
        self,
        repository: str | Path,
        *,
        models: Sequence[str],
        environment: ServerEnvironment | None = None,
        log_dir: str | Path | None = None,
        exit_timeout_s: int = 10,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.models = list(models)
        self.environment = environment or ServerEnvironment.find()
        self.exit_timeout_s = exit_timeout_s
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.http_port = self.grpc_port = 0
        self.log_path = Path()

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> LocalTritonServer:
        self._tmp = tempfile.TemporaryDirectory(prefix="mtst-tritonserver-")
        work = Path(self._tmp.name)
        log_dir = self._log_dir or work
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / "tritonserver.log"
        self.http_port = free_port()
        self.grpc_port = free_port()
        while self.grpc_port == self.http_port:
            self.grpc_port = free_port()
        cmd = [
            str(self.environment.server_binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.environment.backends(work / 'backends')}",
            "--model-control-mode=explicit",
            *(f"--load-model={m}" for m in self.models),
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false",
            f"--exit-timeout-secs={self.exit_timeout_s}",
        ]
        with open(self.log_path, "wb") as log:
            # own session: the server and its stub processes form one group that stop() ends
            self.process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment.process_env(),
                start_new_session=True,
            )
        return self

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-tail:]
        except OSError:
            return ""

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError):
            return 0

    def is_ready(self, model: str | None = None) -> bool:
        return self._get(f"/v2/models/{model}/ready" if model else "/v2/health/ready") == 200

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Return once the server and every model report ready; TritonStartError if it exits first or
        the time runs out."""
        if self.process is None:
            raise TritonStartError("server not started")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise TritonStartError(f"tritonserver exited with code {code}; log tail:\n{self.log()}")
            if self.is_ready() and all(self.is_ready(m) for m in self.models):
                return
            time.sleep(0.25)
        raise TritonStartError(f"tritonserver not ready after {timeout_s:.0f} s; log tail:\n{self.log()}")

    def stop(self) -> int | None:
        """SIGTERM to the server (it unloads its models and stops their stubs), SIGKILL to its
        process group after the exit timeout or for anything left behind; the exit code."""
        proc, self.process = self.process, None
        code = None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=self.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
            with contextlib.suppress(ProcessLookupError):  # stub processes left behind, if any
                os.killpg(proc.pid, signal.SIGKILL)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return code

    def __enter__(self) -> LocalTritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
