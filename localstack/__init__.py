"""The stack on this machine, for development, benchmarks, load tests and tests (not shipped in any image).

    python -m localstack.run             # `make run`: Triton on CPU + the gateway on 127.0.0.1:$PORT
    python -m localstack.milvus_server   # a real Milvus 2.3.5 server until Ctrl-C

- run.py: `make run` (optionally with the Milvus server: `make run MILVUS=server`)
- stack.py: LocalStack, a private stack on free ports (the load test, the soak, the load test's tests)
- gateway.py: GatewayProcess, the gateway as its own process (`python -m uvicorn gateway.app:app`)
- milvus_server.py: MilvusServer, the real Milvus 2.3.5 standalone server from the `milvus` wheel
- probes.py: /proc probes of those processes (RSS, open files, process tree) and free ports

Triton itself is started by facestack.triton.launcher (the tests' session server uses it too).
"""
