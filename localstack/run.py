"""`make run` / `python -m localstack.run`: the real Triton on CPU plus the gateway on 127.0.0.1:$PORT.

Milvus Lite lives under the data directory (FACESTACK_DATA_DIR, default .data/); with `--milvus-server`
(`make run MILVUS=server`) a real Milvus 2.3.5 server (localstack/milvus_server.py) runs instead, its data in
<data dir>/milvus-server, and is killed at the end (acknowledged writes survive). The API key is
FACESTACK_API_KEY when set, else one generated on the first run and kept in <data dir>/api_key.
Ctrl-C (or SIGTERM) stops the gateway (in-flight requests finish), then Triton.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import uvicorn
from pydantic import SecretStr

from facestack.settings import Settings, get_settings
from facestack.triton.launcher import TritonServer, TritonStartError
from gateway.app import audit_target, create_app, milvus_uri
from gateway.auth import new_key
from localstack.probes import port_free


def say(message: str) -> None:
    print(message, flush=True)


def local_key(settings: Settings) -> tuple[str, str]:
    """(key, where it came from)."""
    if settings.api_key and settings.api_key.get_secret_value():
        return settings.api_key.get_secret_value(), "FACESTACK_API_KEY"
    path = Path(settings.data_dir) / "api_key"
    if path.exists() and path.read_text().strip():
        return path.read_text().strip(), str(path)
    key = new_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key, f"{path} (generated now)"


def main(argv: list[str] | None = None) -> int:
    milvus_server = "--milvus-server" in (sys.argv[1:] if argv is None else argv)
    settings = get_settings()
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    ports = {"PORT (gateway)": settings.port, "FACESTACK_TRITON_GRPC_PORT": settings.triton_grpc_port,
             "FACESTACK_TRITON_HTTP_PORT": settings.triton_http_port,
             "FACESTACK_TRITON_METRICS_PORT": settings.triton_metrics_port}
    busy = [f"{name}={port}" for name, port in ports.items() if not port_free(port)]
    if busy:
        say(f"error: port(s) in use on 127.0.0.1: {', '.join(busy)}; stop what uses them or set those variables")
        return 1
    key, key_source = local_key(settings)

    say(f"==> starting Triton on CPU (model repository {settings.model_repository})")
    started = time.monotonic()
    triton = TritonServer(http_port=settings.triton_http_port, grpc_port=settings.triton_grpc_port,
                          metrics_port=settings.triton_metrics_port, log_verbose=settings.triton_log_verbose,
                          config_name=settings.model_config_name)
    try:
        triton.start()
    except TritonStartError as exc:
        say(f"error: Triton did not start: {exc}")
        return 1
    say(f"    Triton ready in {time.monotonic() - started:.1f} s: gRPC {triton.grpc_url}, "
        f"metrics {triton.metrics_url}")

    settings = settings.model_copy(update={"triton_grpc_url": triton.grpc_url, "api_key": SecretStr(key)})
    milvus = None
    if milvus_server:
        from localstack.milvus_server import MilvusServer, MilvusServerError

        say("==> starting the Milvus 2.3.5 server (about 10 s)")
        milvus = MilvusServer(Path(settings.data_dir) / "milvus-server",
                              graceful_ms=int(settings.milvus_bounded_staleness_s * 1000))
        try:
            milvus.start()
        except MilvusServerError as exc:
            say(f"error: Milvus did not start: {exc}")
            triton.stop()
            return 1
        settings = settings.model_copy(update={"milvus_uri": milvus.uri})
    say(f"==> starting the gateway (Milvus: {milvus_uri(settings)}, audit log: {audit_target(settings)})")
    server = uvicorn.Server(uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=settings.port, log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.gateway_shutdown_timeout_s), access_log=False))

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            url = f"http://127.0.0.1:{settings.port}"
            say(f"==> facestack ready at {url}  (API docs {url}/docs)")
            say(f"    API key: {key}  [from {key_source}]")
            say(f"    try: curl -s -H 'X-API-Key: {key}' -F image=@photo.jpg {url}/v1/detect")
            say("    Ctrl-C to stop")

    threading.Thread(target=announce, daemon=True, name="announce").start()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # uvicorn restores it after serving
    code = 0
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    except SystemExit as exc:  # uvicorn exits when it cannot start (e.g. the lifespan failed)
        code = int(exc.code or 0)
    finally:
        if milvus is not None:
            say("==> stopping Milvus")
            milvus.stop()
        say("==> stopping Triton")
        triton.stop()
        say("==> stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
