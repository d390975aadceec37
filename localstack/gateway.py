"""The gateway as its own process: `python -m uvicorn gateway.app:app`, as the Helm chart runs it.

One launcher for everything that needs a real gateway process (the benchmark, the load test's local stack,
the reliability tests and the soak run), so that a load generator never shares the gateway's event loop
and every caller starts, waits for and stops it the same way.

It binds 127.0.0.1 on a free port, takes its settings from a cleaned FACESTACK_* environment, writes its
output to a log file in the data directory (quoted in every start error) and runs in its own session, so
that a kill reaches exactly what was started (by process group id), never anything by name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from facestack.settings import REPO_ROOT
from facestack.triton.launcher import free_port
from localstack import probes

GRACEFUL_SHUTDOWN_S = 20  # uvicorn's budget for in-flight requests after SIGTERM


class GatewayProcessError(RuntimeError):
    """The gateway exited or did not answer in time; the message ends with the tail of its log."""


def clean_env(**extra: str) -> dict[str, str]:
    """The parent's environment without FACESTACK_*/MILVUS_*/PORT (a developer's settings must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACESTACK_", "MILVUS_")) and k != "PORT"}
    return {**env, **extra}


def setting_env(name: str, value: object) -> tuple[str, str]:
    """A settings field as an environment variable: ("gateway_triton_queue", 2) -> FACESTACK_GATEWAY_TRITON_QUEUE=2;
    an upper-case name is taken as is; lists and tuples are JSON (as pydantic-settings reads them)."""
    key = name if name.isupper() else f"FACESTACK_{name.upper()}"
    return key, json.dumps(value) if isinstance(value, list | tuple) else str(value)


class GatewayProcess:
    """`python -m uvicorn gateway.app:app` on 127.0.0.1:`port` (a free one by default).

    Keys: `api_key` (FACESTACK_API_KEY, all scopes, tenant "default") and/or `keys_file`
    (FACESTACK_API_KEYS_FILE). Any other settings field goes in `settings`: {"gateway_rate_limit_rps": 0}
    -> FACESTACK_GATEWAY_RATE_LIMIT_RPS=0. `entry="module"` runs `python -m gateway` instead, the container's
    command, which takes its address from PORT and FACESTACK_GATEWAY_HOST.
    """

    def __init__(self, data_dir: Path, triton_url: str, keys_file: Path | None = None, *,
                 api_key: str | None = None, port: int | None = None, log_level: str = "warning",
                 access_log: bool = False, entry: str = "uvicorn", **settings: object) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {"FACESTACK_DATA_DIR": str(self.data_dir), "FACESTACK_TRITON_GRPC_URL": triton_url,
               "FACESTACK_LOG_LEVEL": log_level}
        if keys_file is not None:
            env["FACESTACK_API_KEYS_FILE"] = str(keys_file)
        if api_key is not None:
            env["FACESTACK_API_KEY"] = api_key
        env.update(setting_env(name, value) for name, value in settings.items())
        if entry == "module":
            env.update(PORT=str(self.port), FACESTACK_GATEWAY_HOST="127.0.0.1",
                       FACESTACK_GATEWAY_SHUTDOWN_TIMEOUT_S=str(GRACEFUL_SHUTDOWN_S))
            self.command = [sys.executable, "-m", "gateway"]
        elif entry == "uvicorn":
            self.command = [sys.executable, "-m", "uvicorn", "gateway.app:app", "--host", "127.0.0.1",
                            "--port", str(self.port), "--log-level", log_level,
                            "--timeout-graceful-shutdown", str(GRACEFUL_SHUTDOWN_S)]
            if not access_log:
                self.command.append("--no-access-log")
        else:
            raise ValueError(f"entry must be 'uvicorn' or 'module', not {entry!r}")
        self.env = clean_env(**env)
        self.log = self.data_dir / f"gateway-{self.port}.log"  # per port: a restart on the same data dir gets its own
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "gateway not started"
        return self.proc.pid

    def start(self, timeout: float = 180.0, *, ready: bool = False) -> GatewayProcess:
        """Starts it and waits for /healthz (serving), or for /readyz (Triton and Milvus reachable) when `ready`.
        The default timeout is generous: a reopened Milvus Lite file replays its write-ahead log first."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command, env=self.env, cwd=REPO_ROOT, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_for("/readyz" if ready else "/healthz", timeout)
        except BaseException:  # not up (or interrupted): nothing may outlive a failed start
            self.kill()
            raise
        return self

    def wait_ready(self, timeout: float = 60.0) -> GatewayProcess:
        """Waits for /readyz of a started gateway (it answers /healthz before its backends are reachable)."""
        self._wait_for("/readyz", timeout)
        return self

    def _wait_for(self, path: str, timeout: float) -> None:
        assert self.proc is not None, "gateway not started"
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise GatewayProcessError(f"gateway exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}{path}", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                state = "ready" if path == "/readyz" else "up"
                raise GatewayProcessError(f"gateway not {state} within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def rss_mb(self) -> float:
        return probes.rss_mb(self.pid)

    def open_fds(self) -> int:
        return probes.open_fds(self.pid)

    def client(self, key: str | None = None, timeout: float = 60.0) -> httpx.Client:
        """An HTTP client for this gateway, sending `key` as X-API-Key (none: anonymous)."""
        return httpx.Client(base_url=self.url, headers={"X-API-Key": key} if key else {}, timeout=timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signals its whole process group (only what this object started) and waits for it to exit."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM (graceful: in-flight requests finish, Milvus Lite syncs), SIGKILL if it takes over `timeout`
        seconds. Returns the exit code (None if it was never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
