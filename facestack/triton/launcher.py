"""Run the real `tritonserver` binary (from the nvidia-pytriton wheel) on CPU with this model repository.

The wheel ships Triton 2.51 with the python backend but no stub beside it, so a backend directory is
assembled (the backend's .so and utils module + the stub for this Python). The stub runs the first
`python3` on PATH and must see this environment (numpy < 2, onnxruntime, facestack), so the venv's bin
leads PATH and LD_LIBRARY_PATH names this interpreter's libpython.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

from facestack.settings import get_settings
from facestack.triton.contract import MODEL


class TritonStartError(RuntimeError):
    """Triton exited or a model failed to load; the message carries the log lines that say why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pytriton_dir() -> Path:
    import pytriton  # the wheel is only a carrier for the server binary here

    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def backend_directory() -> Path:
    """A backends/ folder whose python/ holds the backend library, its utils module and our stub."""
    src = pytriton_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = src / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonStartError(f"nvidia-pytriton has no python backend stub for Python {version}")
    target = Path(tempfile.gettempdir()) / f"facestack-triton-backends-{os.getuid()}-{version}"
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for file in (src / "backends/python/libtriton_python.so", src / "backends/python/triton_python_backend_utils.py",
                 stub):
        dest = python_dir / file.name
        if not dest.exists() or dest.stat().st_size != file.stat().st_size:
            shutil.copy2(file, dest)
    return target


def _stub_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    # The copied stub's RPATH ($ORIGIN/../../../../nvidia_pytriton.libs) no longer points at the wheel's
    # bundled libraries (libcudart...), so name them explicitly.
    bundled = str(pytriton_dir().parent.parent / "nvidia_pytriton.libs")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, bundled, env.get("LD_LIBRARY_PATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class TritonServer:
    """A tritonserver process bound to `host` (127.0.0.1; any 127.x.y.z is loopback too, so two servers can share
    ports on 127.0.0.1 and 127.0.0.2); `start()` returns once the pipeline model is ready."""

    def __init__(self, repository: Path | None = None, *, http_port: int | None = None,
                 grpc_port: int | None = None, metrics_port: int | None = None, log_verbose: int = 0,
                 config_name: str = "", ready_model: str = MODEL, host: str = "127.0.0.1") -> None:
        settings = get_settings()
        self.repository = Path(repository or settings.model_repository).resolve()
        self.host = host
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.log_verbose = log_verbose
        self.config_name = config_name
        self.ready_model = ready_model
        self._process: subprocess.Popen[bytes] | None = None
        self._log: deque[str] = deque(maxlen=400)

    @property
    def pid(self) -> int | None:
        """The server's process id, which is also its process group's (it starts in a session of its own)."""
        return self._process.pid if self._process is not None else None

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        cmd = [
            str(pytriton_dir() / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_directory()}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0",
            "--metrics-config=summary_latencies=true",
            "--exit-on-error=true", f"--log-verbose={self.log_verbose}",
        ]
        if self.config_name:
            cmd.append(f"--model-config-name={self.config_name}")
        return cmd

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(list(self._log)[-lines:])

    def _pump_log(self) -> None:
        assert self._process and self._process.stdout
        for raw in self._process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self._log.append(line)
            if self.log_verbose:
                print(f"[triton] {line}", file=sys.stderr)

    def _model_ready(self) -> bool:
        url = f"http://{self.http_url}/v2/models/{self.ready_model}/ready"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self, timeout: float | None = None) -> TritonServer:
        timeout = timeout or get_settings().triton_start_timeout_s
        self._process = subprocess.Popen(self.command(), env=_stub_environment(), stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._pump_log, daemon=True, name="triton-log").start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                time.sleep(0.2)  # let the log pump drain
                failed = [line for line in self._log if "failed to load" in line or "error" in line.lower()]
                raise TritonStartError(f"tritonserver exited with code {self._process.returncode}; "
                                       f"{failed[-1] if failed else ''}\n{self.log_tail()}")
            if self._model_ready():
                return self
            fatal = [line for line in self._log if "error while loading shared libraries" in line
                     or "failed to load" in line]
            if fatal:
                self.stop()
                raise TritonStartError(f"a model failed to load: {fatal[0]}\n{self.log_tail()}")
            time.sleep(0.1)
        self.stop()
        raise TritonStartError(f"{self.ready_model} not ready within {timeout:.0f}s\n{self.log_tail()}")

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (Triton drains in-flight requests), then SIGKILL the whole group if it lingers."""
        proc, self._process = self._process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def kill(self) -> None:
        """SIGKILL the server and its stub processes at once (fault-injection tests)."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._process = None

    def __enter__(self) -> TritonServer:
        return self.start() if not self.is_running() else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """`python -m facestack.triton.launcher`: serve the repository until Ctrl-C (ports from settings)."""
    settings = get_settings()
    server = TritonServer(http_port=settings.triton_http_port, grpc_port=settings.triton_grpc_port,
                          metrics_port=settings.triton_metrics_port, log_verbose=settings.triton_log_verbose,
                          config_name=settings.model_config_name)
    server.start()
    print(f"triton ready: grpc {server.grpc_url}, http {server.http_url}, metrics {server.metrics_url}", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on SIGTERM as on Ctrl-C
    try:
        while server.is_running():
            time.sleep(0.5)
        print(f"triton exited:\n{server.log_tail()}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
