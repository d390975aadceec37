"""A private local stack for load tests: the real Triton on CPU + the gateway as its own process.

Everything binds 127.0.0.1 on free ports with a fresh data directory and a generated key, so it never
collides with `make run` (ports 8000/8001) or another run. The gateway runs as a separate process
(`python -m uvicorn gateway.app:app`, as in production) so the load generator does not share its event loop.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from facestack.triton.launcher import TritonServer, free_port


class StackError(RuntimeError):
    pass


class LocalStack:
    """`with LocalStack() as stack:` -> stack.url, stack.api_key. Pass triton_url to reuse a running Triton."""

    def __init__(self, triton_url: str | None = None, *, ready_timeout_s: float = 240.0) -> None:
        self.triton_url = triton_url
        self.ready_timeout_s = ready_timeout_s
        self.api_key = "fs_" + secrets.token_urlsafe(32)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = Path(tempfile.mkdtemp(prefix="facestack-loadtest-"))
        self._triton: TritonServer | None = None
        self._gateway: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalStack:
        if self.triton_url is None:
            self._triton = TritonServer().start()
            self.triton_url = self._triton.grpc_url
        # The parent's FACESTACK_* settings (a developer's .env, make run's data dir) must not leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FACESTACK_", "MILVUS_"))}
        env.update(FACESTACK_DATA_DIR=str(self.data_dir), FACESTACK_TRITON_GRPC_URL=self.triton_url,
                   FACESTACK_API_KEY=self.api_key, FACESTACK_LOG_LEVEL="warning")
        log = (self.data_dir / "gateway.log").open("wb")
        self._gateway = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "gateway.app:app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning", "--no-access-log"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._gateway is not None and self._gateway.poll() is not None:
                raise StackError(f"gateway exited ({self._gateway.returncode}): {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise StackError(f"gateway not ready within {self.ready_timeout_s:.0f} s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        path = self.data_dir / "gateway.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        proc, self._gateway = self._gateway, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # SIGTERM: in-flight requests finish, Milvus Lite syncs at close
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._triton is not None:
            self._triton.stop()
            self._triton = None
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
