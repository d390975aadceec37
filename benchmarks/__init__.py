"""Benchmarks (not tests, not shipped in any image); results and method in docs/benchmarks.md.

    python -m benchmarks.pipeline   # `make bench`: Triton vs in process, verify end to end, the peer per core
    python -m benchmarks.peer       # face_recognition 1.3.0 on one core (run by benchmarks.pipeline)
    python -m benchmarks.gateway    # `make bench-gateway`: verify and identify through HTTP
    python -m benchmarks.milvus     # `make bench-milvus`: identify at 100k and 1M templates on the Milvus server
    python -m benchmarks.sface      # the SFace export's optimisation passes (docs/sface-optimisation.md)

Their JSON results live where the docs link them (docs/bench/); scratch output goes to benchmarks/results/
(git-ignored).
"""
