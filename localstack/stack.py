"""A private local stack for load tests: the real Triton on CPU + the gateway as its own process.

Everything binds 127.0.0.1 on free ports with a fresh data directory and a generated key, so it never
collides with `make run` (ports 8000/8001) or another run. The gateway runs as a separate process
(`python -m uvicorn gateway.app:app`, as in production) so the load generator does not share its event loop.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from facestack.triton.launcher import TritonServer, free_port
from localstack.gateway import GatewayProcess, GatewayProcessError


class StackError(RuntimeError):
    pass


class LocalStack:
    """`with LocalStack() as stack:` -> stack.url, stack.api_key. Pass triton_url to reuse a running Triton."""

    def __init__(self, triton_url: str | None = None, *, ready_timeout_s: float = 240.0, **settings: object) -> None:
        self.triton_url = triton_url
        self.settings = settings  # gateway settings fields, e.g. gateway_rate_limit_rps=0
        self.ready_timeout_s = ready_timeout_s
        self.api_key = "fs_" + secrets.token_urlsafe(32)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = Path(tempfile.mkdtemp(prefix="facestack-loadtest-"))
        self._triton: TritonServer | None = None
        self._gateway: GatewayProcess | None = None

    def start(self) -> LocalStack:
        if self.triton_url is None:
            self._triton = TritonServer().start()
            self.triton_url = self._triton.grpc_url
        self._gateway = GatewayProcess(self.data_dir, self.triton_url, api_key=self.api_key, port=self.port,
                                       **self.settings)
        try:
            self._gateway.start(self.ready_timeout_s, ready=True)
        except GatewayProcessError as exc:
            raise StackError(str(exc)) from exc
        return self

    @property
    def gateway(self) -> GatewayProcess:
        assert self._gateway is not None, "stack not started"
        return self._gateway

    @property
    def triton_pid(self) -> int:
        """The tritonserver process (its python stubs are its children), when this stack started its own."""
        assert self._triton is not None and self._triton._process is not None, "no Triton of this stack's own"
        return self._triton._process.pid  # the launcher keeps its Popen private

    @property
    def ports(self) -> list[int]:
        """Every port the stack listens on (the gateway's, and its own Triton's)."""
        triton = self._triton
        return [self.port] + ([triton.grpc_port, triton.http_port, triton.metrics_port] if triton else [])

    def log_tail(self, chars: int = 2000) -> str:
        return self._gateway.log_tail(chars) if self._gateway is not None else ""

    def stop(self) -> None:
        gateway, self._gateway = self._gateway, None
        if gateway is not None:
            gateway.stop(timeout=60)  # SIGTERM: in-flight requests finish, Milvus Lite syncs at close
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
