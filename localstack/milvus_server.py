"""A real Milvus 2.3.5 standalone server from the PyPI wheel `milvus==2.3.5`, for tests, `make run MILVUS=server`
and the benchmark (one launcher for all three).

The wheel ships the server binary (lzma-packed) and a config template; its own Python launcher binds fixed
default ports, waits on the metrics port and hangs on a normal stop. This module uses the wheel only to
unpack the binary and render the config, then runs the server itself:

- every port on 127.0.0.1 is a fresh free one, embedded etcd included: the rendered config points
  `etcd.config.path` at an etcd config of our own (without it the embedded etcd binds 127.0.0.1:2379/2380
  whatever `--etcd-port` says, so only one server could run on a machine);
  several servers (other test sessions on the machine) then run side by side;
- readiness is a pymilvus call on the proxy port (the metrics port moves silently when busy);
- stop is SIGKILL of the process group (Milvus' graceful stop hangs here); `kill()` is the same, kept for
  crash tests, and `start()` again restarts on the same data directory with fresh ports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

from facestack.settings import REPO_ROOT
from facestack.triton.launcher import free_port

BIN_CACHE = REPO_ROOT / ".cache" / "milvus-server"
PORT_KEYS = ("proxy_port", "proxy_internal_port", "root_coord_port", "query_coord_port", "query_node_port",
             "index_coord_port", "index_node_port", "data_coord_port", "data_node_port", "etcd_port")
# Bounded consistency reads see writes older than this (Milvus' common.gracefulTime, default 5000 ms).
DEFAULT_GRACEFUL_MS = 5000
# How often the proxy syncs its time tick (Milvus' proxy.timeTickInterval, default 200 ms). A Strong read waits
# for the next tick after the write it must see, so it costs up to this much: the store's creates (a claim then a
# Strong read) take ~1.2 s at 200 ms and ~0.2 s at 50 ms on this machine. The tests run at 50 ms.
DEFAULT_TIME_TICK_MS = 200


class MilvusServerError(RuntimeError):
    """The server did not start in time or exited; the message ends with the tail of its log."""


def _unpack(bin_dir: Path) -> Path:
    """The wheel's binaries unpacked once into `bin_dir` (about 400 MB; checked by md5 like the wheel does)."""
    import milvus  # the wheel is only a carrier for the server binary here

    bin_dir.mkdir(parents=True, exist_ok=True)
    milvus._initialize_data_files(str(bin_dir.parent))  # writes <parent>/bin/*
    return bin_dir / "milvus"


class MilvusServer:
    """`milvus run standalone` on 127.0.0.1 with its own data directory and free ports.

    `uri` is the pymilvus address (http://127.0.0.1:<proxy port>); it changes on every start.
    """

    def __init__(self, data_dir: Path, *, graceful_ms: int = DEFAULT_GRACEFUL_MS, session_ttl_s: int = 10,
                 start_timeout_s: float = 180.0, time_tick_ms: int = DEFAULT_TIME_TICK_MS) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.graceful_ms = graceful_ms
        self.time_tick_ms = time_tick_ms
        self.session_ttl_s = session_ttl_s  # a restart waits for the killed server's sessions to expire
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy_port']}"

    @property
    def log(self) -> Path:
        return self.data_dir / "logs" / "milvus-stdout.log"

    def log_tail(self, chars: int = 3000) -> str:
        logs = [self.log, self.data_dir / "logs" / "milvus-stderr.log"]
        return "\n".join(p.read_text(errors="replace")[-chars:] for p in logs if p.exists())

    # ---- config ----------------------------------------------------------------------------------

    def _configure(self) -> Path:
        """Renders <data>/configs/milvus.yaml (the wheel's template) and our embedded-etcd config; fresh ports."""
        from milvus import MilvusServerConfig

        self.ports = {key: free_port() for key in PORT_KEYS}
        self.ports["etcd_peer_port"] = free_port()
        config = MilvusServerConfig(data_dir=str(self.data_dir), **self.ports)
        config.set("common.gracefulTime", self.graceful_ms)
        config.set("common.session.ttl", self.session_ttl_s)
        config.set("proxy.timeTickInterval", self.time_tick_ms)
        config.resolve()  # writes configs/milvus.yaml with the storage paths under data_dir
        etcd = self.data_dir / "configs" / "embed-etcd.yaml"
        client, peer = (f"http://127.0.0.1:{self.ports[k]}" for k in ("etcd_port", "etcd_peer_port"))
        etcd.write_text(f"name: default\nlisten-client-urls: {client}\nadvertise-client-urls: {client}\n"
                        f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
                        f"initial-cluster: default={peer}\n")
        yaml = self.data_dir / "configs" / "milvus.yaml"
        text = yaml.read_text()
        text = text.replace("\netcd:\n", f"\netcd:\n  config:\n    path: {etcd}\n", 1)
        text = text.replace("localhost:", "127.0.0.1:")
        yaml.write_text(text)
        return yaml

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> MilvusServer:
        try:
            executable = _unpack(BIN_CACHE / "bin")
            config = self._configure()
            logs = self.data_dir / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "DEPLOY_MODE": "STANDALONE", "METRICS_PORT": str(free_port()),
                   "MILVUSCONF": str(config.parent) + "/", "MILVUS_RUN_DIR": str(self.data_dir / "run"),
                   "LD_LIBRARY_PATH": f"{executable.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
            with open(logs / "milvus-stdout.log", "ab") as out, open(logs / "milvus-stderr.log", "ab") as err:
                self.proc = subprocess.Popen([str(executable), "run", "standalone"], cwd=self.data_dir, env=env,
                                             stdout=out, stderr=err, start_new_session=True)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        last = ""
        while True:
            if self.proc.poll() is not None:
                raise MilvusServerError(f"milvus exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                client = MilvusClient(self.uri, timeout=2)
                try:
                    client.list_collections(timeout=2)
                    return
                finally:
                    client.close()
            except MilvusException as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise MilvusServerError(f"milvus not ready within {self.start_timeout_s:.0f} s ({last}):\n"
                                        f"{self.log_tail()}")
            time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL of the server's process group, keeping its data (a crash; `start()` restarts it)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
            self.proc = None

    def stop(self) -> None:
        """SIGKILL: a normal stop hangs in 2.3.5, and acknowledged writes survive a kill (field notes)."""
        self.kill()

    def __enter__(self) -> MilvusServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main() -> int:
    """`python -m localstack.milvus_server [DATA_DIR]`: run a server until Ctrl-C; prints its URI."""
    import sys

    data = Path(sys.argv[1] if len(sys.argv) > 1 else REPO_ROOT / ".data" / "milvus-server")
    with MilvusServer(data) as server:
        print(f"MILVUS_URI={server.uri}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
