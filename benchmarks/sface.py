"""Where the SFace export's time goes: latency and parity after each optimisation pass, as a markdown table.

    .venv/bin/python -m benchmarks.sface [--runs 20]

Each row is the naive fold with the first k passes of `export.sface.OPTIMISATION_PASSES` applied, plus one
alternative PRelu rewrite for comparison. onnxruntime CPU, 2 intra-op threads, ms per face: median of --runs
runs at batch 1 and of half as many at batch 8, the rows taking turns so background load on a shared machine
hits all alike (the load average is printed: numbers taken on a busy machine are inflated). OpenCV dnn at
batch 1 on 2 threads.
Parity is against the quantised original run by onnx's reference evaluator on 2 seeded inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from export import sface
from export.weights import SFACE_INT8BQ
from facestack.artifacts import fetch
from facestack.pipeline.sessions import onnx_session, session_options

NAIVE, EXPORTED = "naive fold", "+ PRelu as s*x + (1-s)*Relu(x) = exported"
LEVELS = {"ORT basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "ORT all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def _exact_prelu(model: onnx.ModelProto) -> onnx.ModelProto:
    """Alternative rewrite, bit-exact: PRelu(x) = Relu(x) + s * (x - Relu(x))."""
    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        (x, s), (y,) = node.input, node.output
        slope = numpy_helper.to_array(consts[s]).reshape(1, -1, 1, 1)
        graph.initializer.extend([numpy_helper.from_array(slope, f"{y}_slope")])
        nodes += [helper.make_node("Relu", [x], [f"{y}_pos"]), helper.make_node("Sub", [x, f"{y}_pos"], [f"{y}_neg"]),
                  helper.make_node("Mul", [f"{y}_neg", f"{y}_slope"], [f"{y}_negs"]),
                  helper.make_node("Add", [f"{y}_pos", f"{y}_negs"], [y])]
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def variants(naive: onnx.ModelProto) -> dict[str, bytes]:
    passes = sface.OPTIMISATION_PASSES
    rows: dict[str, tuple] = {NAIVE: ()}
    rows["+ initializers as constants"] = passes[:1]
    rows["+ onnxslim (Conv+BN, const folding)"] = passes[:2]
    rows[EXPORTED] = passes
    rows["(alt.) PRelu as Relu(x) + s*(x - Relu(x))"] = (*passes[:2], ("exact PRelu", _exact_prelu))
    return {name: sface.build(naive, p).SerializeToString(deterministic=True) for name, p in rows.items()}


def kernel_ms_by_op(model: bytes, level: ort.GraphOptimizationLevel, runs: int) -> dict[str, float]:
    """onnxruntime's own profile: kernel time per op type, ms per batch-1 run, largest first."""
    with tempfile.TemporaryDirectory() as tmp:
        options = session_options(sface.BENCH_THREADS, level)
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        sess = onnx_session(model, options)
        for _ in range(runs):
            sess.run(None, {sface.INPUT_NAME: sface.sample_batch(1)})
        events = json.loads(Path(sess.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"] / 1e3 / runs
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def opencv_ms(models: dict[str, bytes], runs: int) -> dict[str, float]:
    """OpenCV dnn at batch 1, ms per face, median; the models take turns like sface.ms_per_face's sessions."""
    cv2.setNumThreads(sface.BENCH_THREADS)
    nets = {name: cv2.dnn.readNetFromONNX(model) for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in nets}
    for i in range(2 + runs):
        for name, net in nets.items():
            start = time.perf_counter()
            net.setInput(sface.sample_batch(1))
            net.forward()
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) * 1e3 for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per row and batch size")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    src = fetch(SFACE_INT8BQ)
    models = variants(sface.naive_fold(src))
    x = sface.sample_batch(2, seed=1)
    reference = sface.reference_embeddings(src, x)
    columns: dict[str, dict[str, float]] = {}
    for level_name, level in LEVELS.items():
        sessions = {name: sface.session(model, level=level) for name, model in models.items()}
        for batch, runs in ((1, args.runs), (8, max(3, args.runs // 2))):
            columns[f"{level_name} b{batch}"] = sface.ms_per_face(sessions, batch, runs)
    columns["OpenCV b1"] = opencv_ms(models, args.runs)
    parities = {name: sface.parity(reference, sface.embed(sface.session(model), x)) for name, model in models.items()}
    profiles = {(name, level_name): kernel_ms_by_op(models[name], level, args.runs)
                for name in (NAIVE, EXPORTED) for level_name, level in LEVELS.items()}

    print(f"onnxruntime {ort.__version__}, OpenCV {cv2.__version__}, {sface.BENCH_THREADS} threads; ms per face, "
          f"median of {args.runs} (b1) / {max(3, args.runs // 2)} (b8) runs; "
          f"load average before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")
    print("| graph | " + " | ".join(columns) + " | max abs diff vs original | 1 - min cosine |")
    print("|---|" + "---:|" * (len(columns) + 2))
    for name in models:
        cells = [f"{columns[c][name]:.1f}" for c in columns]
        p = parities[name]
        print(f"| {name} | " + " | ".join(cells) + f" | {p['max_abs_diff']:.1e} | {1 - p['min_cosine']:.0e} |")
    print("\nonnxruntime kernel time by op type, ms per batch-1 run (its profiler):")
    for (name, level_name), by_op in profiles.items():
        ops = ", ".join(f"{op} {ms:.1f}" for op, ms in by_op.items() if ms >= 0.05)
        print(f"- {name}, {level_name}: total {sum(by_op.values()):.1f}: {ops}")


if __name__ == "__main__":
    main()
