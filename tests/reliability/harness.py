"""What the reliability tests start, kill and measure beyond the local stack (localstack: the gateway process
and its /proc probes): a hashed keys file, a Milvus Lite server that can die, the fuzz target's bounds and
a slow network in front of a server.

Everything binds 127.0.0.1 on free ports; every process is started in its own session so that a test can
kill exactly what it started (by process group id), never by name.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from facestack.triton.launcher import free_port
from gateway.auth import hash_key, new_key
from localstack.gateway import GatewayProcess


def write_keys(path: Path, keys: dict[str, tuple[str, list[str]]]) -> dict[str, str]:
    """keys: name -> (tenant, scopes). Writes the hashed keys file; returns name -> plaintext key."""
    plain = {name: new_key() for name in keys}
    records = [{"id": f"{name}-key", "tenant": tenant, "scopes": scopes, "hash": hash_key(plain[name])}
               for name, (tenant, scopes) in keys.items()]
    path.write_text(json.dumps({"keys": records}))
    return plain


# ---- Milvus Lite as a server (a Milvus that can die under the gateway) ------------------------------

class MilvusLiteServer:
    """`milvus-lite server --data-dir D --host 127.0.0.1 --port P` (field notes: it has no auth; bind loopback)."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> MilvusLiteServer:
        from pymilvus import MilvusClient

        exe = Path(sys.executable).parent / "milvus-lite"
        log = open(self.data_dir.parent / f"milvus-{self.port}.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen([str(exe), "server", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
                                      "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"milvus-lite server exited with {self.proc.returncode}"
            try:
                client = MilvusClient(self.uri, timeout=1)
                client.list_collections(timeout=1)
                client.close()
                return self
            except Exception:  # not listening yet
                if time.monotonic() > deadline:
                    self.kill()
                    raise
                time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


# ---- the fuzz target --------------------------------------------------------------------------------

@dataclass
class FuzzTarget:
    gateway: GatewayProcess
    baseline_rss_mb: float  # after warm-up
    baseline_fds: int


def check_bounded(target: FuzzTarget, keys: dict[str, str], growth_mb: float = 64.0) -> tuple[float, int]:
    """The fuzzed gateway is up, ready, its warm-up data intact, RSS and open files bounded."""
    gateway = target.gateway
    assert gateway.proc is not None and gateway.proc.poll() is None, gateway.log_text()[-3000:]
    with gateway.client(keys["acme"]) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/v1/galleries/warm").json()["templates"] == 1
    rss, fds = gateway.rss_mb(), gateway.open_fds()
    assert rss - target.baseline_rss_mb < growth_mb, (target.baseline_rss_mb, rss)
    assert fds <= target.baseline_fds + 10, (target.baseline_fds, fds)
    return rss, fds


# ---- a slow network in front of a server ------------------------------------------------------------

class DelayProxy:
    """A TCP proxy on 127.0.0.1 in front of 127.0.0.1:`target_port` that adds `delay` seconds of latency to
    every chunk in both directions (a delay line: chunks keep their order and do not queue behind each
    other's delay, so concurrent calls on one connection are each `2 x delay` slower per round trip).
    Set `delay` at any time; it applies to chunks received from then on."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.delay = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> DelayProxy:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
            ready.set()
            try:
                self._loop.run_forever()
            finally:
                server.close()
                tasks = asyncio.all_tasks(self._loop)
                for task in tasks:
                    task.cancel()
                self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name=f"delay-proxy-{self.port}")
        self._thread.start()
        assert ready.wait(10), "proxy did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def pump() -> None:
            while data := await reader.read(65536):
                line.put_nowait((loop.time() + self.delay, data))
            line.put_nowait((loop.time() + self.delay, b""))

        async def deliver() -> None:
            while True:
                due, data = await line.get()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        await asyncio.gather(pump(), deliver())
