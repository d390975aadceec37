"""dlib's ResNet-29 face recognition network (dlib_face_recognition_resnet_model_v1.dat) -> ONNX.

The .dat is read in pure Python (dlib is only the parity reference in the tests). It is what dlib's
`serialize(net, out)` writes for `anet_type` of dnn_face_recognition_ex.cpp:

    loss_metric<fc_no_bias<128, avg_pool_everything<alevel0<...alevel4<max_pool<3,3,2,2,
        relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>

Each wrapper writes its version and then its subnetwork *before* its own layer's details, so the file holds
the loss, every wrapper's version from the output inwards, the input layer, and then the layers' details
from the input outwards. `add_tag_layer` / `add_skip_layer` write only a version (both 1) and `add_prev_`
writes only its name: the tag IDs are not in the file, so the residual wiring is recovered by matching the
layer sequence against the two block shapes dlib's example defines (`residual` and `residual_down`); any
other sequence is an error. Everything numeric (filter counts, kernel sizes, strides, paddings, weights, the
input mean) comes from the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT_SIZE = 150
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
OPSET = 17

# Where the 5 detector landmarks (right eye centre, left eye centre, nose tip, right mouth corner, left
# mouth corner; subject's right = image left) land in dlib's own 150x150 chip,
# `get_face_chip_details(shape, 150, 0.25)`, in the chip's pixel coordinates (as cv2.warpAffine uses them).
# dlib aligns on its 5-point predictor (four eye corners and the base of the nose, no mouth) at fixed points
# (0.25 + p) / 1.5 * 150; its get_mapping_to_chip then sends the chip rectangle's corners to pixels 0 and 149,
# i.e. those points end up scaled by 149/150 about (75, 75) and shifted by -0.5 px. YuNet's points are other
# anatomy, so the template is fitted: dlib's frontal detector, its 5-point predictor and YuNet (2023mar, at
# the image's own size) on every 8th image of LFW view1 (624 images, 643 faces); YuNet's landmarks mapped
# into dlib's chip by dlib's exact image->chip mapping; the mean per point (per-face spread 3-8 px, from pose).
# Cross-check: reading the points off dlib's 68-point mean face (eye-contour means, nose tip 30, mouth
# corners 48/54) gives [[47.23, 46.29], [99.81, 46.29], [73.52, 76.05], [50.08, 102.34], [96.96, 102.34]],
# within 3 px. On 432 held-out LFW faces, the descriptor of the YuNet-aligned chip is at L2 0.187 mean
# (cosine 0.991) from that of dlib's own chip with this template, 0.199 with the mean-face one; warping with
# dlib's own mapping through cv2 gives 0.009, so the rest is the landmarks, not the warp.
ALIGN_TEMPLATE: list[list[float]] = [
    [46.776, 44.780],
    [102.808, 45.369],
    [74.691, 77.413],
    [51.236, 101.827],
    [98.797, 102.137],
]


class DlibFormatError(ValueError):
    """The file is not the dlib network this converter knows how to translate."""


# ---------------------------------------------------------------------------------------------------------
# dlib's serialisation primitives (dlib/serialize.h, dlib/dnn/tensor.h)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of file at byte {self.pos}")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def integer(self) -> int:
        # One control byte (bit 7: negative, low nibble: byte count), then that many little-endian bytes.
        control = self._take(1)[0]
        value = int.from_bytes(self._take(control & 0x0F), "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        # A float or double is written as an integer mantissa and a base-2 exponent.
        mantissa, exponent = self.integer(), self.integer()
        special = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}
        return special[exponent] if exponent in special else math.ldexp(mantissa, exponent)

    def string(self) -> str:
        return self._take(self.integer()).decode("ascii")

    def boolean(self) -> bool:
        byte = self._take(1)
        if byte not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {byte!r} at byte {self.pos - 1}")
        return byte == b"1"

    def version(self, expected: int, what: str) -> None:
        if (found := self.integer()) != expected:
            raise DlibFormatError(f"{what}: version {found}, expected {expected}")

    def tensor(self) -> np.ndarray:
        # resizable_tensor v2: num_samples, k, nr, nc, then raw little-endian float32.
        self.version(2, "tensor")
        dims = tuple(self.integer() for _ in range(4))
        count = int(np.prod(dims))
        return np.frombuffer(self._take(4 * count), dtype="<f4").reshape(dims).astype(np.float32)

    def alias(self) -> tuple[int, int, int, int]:
        # alias_tensor v1: only the shape of a view into the layer's params tensor.
        self.version(1, "alias_tensor")
        return tuple(self.integer() for _ in range(4))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------
# The layer list


@dataclass
class Layer:
    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc, or "tag/skip" (a wrapper)
    attrs: dict[str, int] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    params: int = 0  # size of dlib's params tensor (what dlib counts as the layer's parameters)


_WRAPPER = "tag/skip"


def _split(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """dlib's alias_tensors: consecutive views into a layer's flat params tensor, which together fill it."""
    flat, views, offset = params.reshape(-1), [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        views.append(flat[offset:offset + size].reshape(shape))
        offset += size
    if offset != flat.size:
        raise DlibFormatError(f"views {shapes} do not fill a params tensor of {flat.size}")
    return views


def _read_details(r: _Reader) -> Layer:
    name = r.string()
    if name == "con_4":
        params = r.tensor()
        a = {k: r.integer() for k in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
        filters, biases = r.alias(), r.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.real()
        w, b = _split(params, filters, biases)  # filters: num_filters x k x nr x nc (OIHW, as ONNX wants)
        return Layer("con", a, {"W": w, "B": b.reshape(-1)}, params.size)
    if name == "affine_":
        # Per-channel y = gamma * x + beta (what bn_con becomes after training); mode 0 = CONV_MODE.
        params = r.tensor()
        gamma, beta = r.alias(), r.alias()
        if (mode := r.integer()) != 0:
            raise DlibFormatError(f"affine_ in mode {mode}; only CONV_MODE (per-channel) is supported")
        g, b = _split(params, gamma, beta)
        return Layer("affine", {}, {"gamma": g.reshape(-1), "beta": b.reshape(-1)}, params.size)
    if name == "relu_":
        return Layer("relu")
    if name in ("max_pool_2", "avg_pool_2"):
        a = {k: r.integer() for k in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
        return Layer(name[:-2], a)
    if name == "add_prev_":
        return Layer("add_prev")
    if name == "fc_2":
        a = {"num_outputs": r.integer(), "num_inputs": r.integer()}
        params = r.tensor()
        weights, biases = r.alias(), r.alias()
        a["bias_mode"] = r.integer()  # 0 = FC_HAS_BIAS, 1 = FC_NO_BIAS
        for _ in range(4):
            r.real()
        # params is num_inputs (+1 bias row) x num_outputs: y = x @ W (+ b).
        views = _split(params, weights, biases) if a["bias_mode"] == 0 else _split(params, weights)
        layer = Layer("fc", a, {"W": views[0].reshape(a["num_inputs"], a["num_outputs"])}, params.size)
        if a["bias_mode"] == 0:
            layer.weights["B"] = views[1].reshape(-1)
        return layer
    raise DlibFormatError(f"unsupported layer {name!r}")


@dataclass
class Network:
    mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int]  # rows, columns
    layers: list[Layer]  # input side first; wrappers included as Layer("tag/skip")
    loss: str


def parse_dat(data: bytes) -> Network:
    r = _Reader(data)
    r.version(1, "add_loss_layer")
    loss = r.string()
    if loss != "loss_metric_2":
        raise DlibFormatError(f"loss layer {loss!r}, expected loss_metric_2")
    _margin, _threshold = r.real(), r.real()  # training-only

    # Wrapper versions from the output inwards: add_layer 2, tag/skip 1, the layer on the input 3.
    wrappers: list[int] = []
    while (v := r.integer()) != 3:
        if v not in (1, 2):
            raise DlibFormatError(f"unexpected wrapper version {v} at byte {r.pos}")
        wrappers.append(v)

    if (name := r.string()) != "input_rgb_image_sized":
        raise DlibFormatError(f"input layer {name!r}, expected input_rgb_image_sized")
    mean_rgb = (r.real(), r.real(), r.real())
    input_size = (r.integer(), r.integer())

    def layer_with_trailer(innermost: bool) -> Layer:
        layer = _read_details(r)
        r.boolean(), r.boolean(), r.boolean()  # setup called, gradient stale, gradient disabled
        r.tensor(), r.tensor()  # x_grad, cached_output (training state)
        r.tensor()  # params_grad, or grad_final for the layer on the input
        if innermost:
            r.integer()  # sample_expansion_factor
        return layer

    layers = [layer_with_trailer(innermost=True)]
    for v in reversed(wrappers):
        layers.append(layer_with_trailer(innermost=False) if v == 2 else Layer(_WRAPPER))
    if r.pos != len(data):
        raise DlibFormatError(f"{len(data) - r.pos} trailing bytes")
    return Network(mean_rgb, input_size, layers, loss)


# ---------------------------------------------------------------------------------------------------------
# ONNX builder


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, output: str | None = None, **attrs: object) -> str:
        out = output or name
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out


@dataclass
class _Value:
    name: str
    shape: tuple[int, int, int]  # C, H, W for a fixed 150x150 input; the batch stays dynamic


class _Builder:
    """Walks the layer list from the input, recognising dlib's residual blocks, emitting ONNX nodes."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.g = _Graph()
        self.pos = 0
        self.count = 0

    def _peek(self, offset: int = 0) -> str | None:
        i = self.pos + offset
        return self.net.layers[i].kind if i < len(self.net.layers) else None

    def _next(self, kind: str) -> Layer:
        if (found := self._peek()) != kind:
            raise DlibFormatError(f"layer {self.pos}: expected {kind}, found {found}")
        self.pos += 1
        return self.net.layers[self.pos - 1]

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def con(self, x: _Value) -> _Value:
        layer = self._next("con")
        a, w = layer.attrs, layer.weights["W"]
        if w.shape[1] != x.shape[0]:
            raise DlibFormatError(f"con_ expects {w.shape[1]} channels, gets {x.shape[0]}")
        name = self._name("conv")
        inputs = [x.name, self.g.const(f"{name}.weight", w), self.g.const(f"{name}.bias", layer.weights["B"])]
        out = self.g.node("Conv", inputs, name, kernel_shape=[a["nr"], a["nc"]], strides=[a["stride_y"], a["stride_x"]],
                          pads=[a["padding_y"], a["padding_x"], a["padding_y"], a["padding_x"]])
        h = 1 + (x.shape[1] + 2 * a["padding_y"] - a["nr"]) // a["stride_y"]
        wd = 1 + (x.shape[2] + 2 * a["padding_x"] - a["nc"]) // a["stride_x"]
        return _Value(out, (a["num_filters"], h, wd))

    def affine(self, x: _Value) -> _Value:
        layer = self._next("affine")
        name = self._name("affine")
        c = x.shape[0]
        if layer.weights["gamma"].size != c:
            raise DlibFormatError(f"affine_ has {layer.weights['gamma'].size} channels, gets {c}")
        gamma = self.g.const(f"{name}.gamma", layer.weights["gamma"].reshape(1, c, 1, 1))
        beta = self.g.const(f"{name}.beta", layer.weights["beta"].reshape(1, c, 1, 1))
        scaled = self.g.node("Mul", [x.name, gamma], f"{name}.mul")
        return _Value(self.g.node("Add", [scaled, beta], f"{name}.add"), x.shape)

    def relu(self, x: _Value) -> _Value:
        self._next("relu")
        return _Value(self.g.node("Relu", [x.name], self._name("relu")), x.shape)

    def pool(self, x: _Value, kind: str) -> _Value:
        a = self._next(kind).attrs
        c, h, w = x.shape
        # A window of 0 means "the whole input" (avg_pool_everything is avg_pool<0,0,1,1>).
        nr, nc = a["nr"] or h, a["nc"] or w
        if (nr, nc) == (h, w) and not (a["padding_y"] or a["padding_x"]):
            op = "GlobalMaxPool" if kind == "max_pool" else "GlobalAveragePool"
            return _Value(self.g.node(op, [x.name], self._name(kind)), (c, 1, 1))
        if kind == "avg_pool" and (a["padding_y"] or a["padding_x"]):
            raise DlibFormatError("avg_pool with padding is not supported")  # not in this network
        out = self.g.node("MaxPool" if kind == "max_pool" else "AveragePool", [x.name], self._name(kind),
                          kernel_shape=[nr, nc], strides=[a["stride_y"], a["stride_x"]],
                          pads=[a["padding_y"], a["padding_x"], a["padding_y"], a["padding_x"]])
        return _Value(out, (c, 1 + (h + 2 * a["padding_y"] - nr) // a["stride_y"],
                            1 + (w + 2 * a["padding_x"] - nc) // a["stride_x"]))

    def add_prev(self, x: _Value, tagged: _Value) -> _Value:
        # dlib's tt::add of tensors of different shapes: each output dimension is the larger of the two and
        # a value missing from one operand counts as zero, i.e. zero-pad at the end of C, H and W. Here that is
        # the channel growth of each residual_down, and in the last two the unpadded stride-2 conv and the 2x2
        # average pool disagree on size (8x8 -> 3x3 vs 4x4, 4x4 -> 1x1 vs 2x2): the conv path gets a zero
        # bottom row and right column.
        self._next("add_prev")
        name = self._name("add")
        shape = tuple(max(p, q) for p, q in zip(x.shape, tagged.shape, strict=True))
        operands = []
        for i, v in enumerate((x, tagged)):
            if v.shape == shape:
                operands.append(v.name)
                continue
            pads = np.array([0, 0, 0, 0, 0, *(s - t for s, t in zip(shape, v.shape, strict=True))], np.int64)
            operands.append(self.g.node("Pad", [v.name, self.g.const(f"{name}.pads{i}", pads)], f"{name}.pad{i}"))
        return _Value(self.g.node("Add", operands, name), shape)  # type: ignore[arg-type]

    def block(self, x: _Value) -> _Value:
        """residual:      relu(add_prev1(block(tag1(x))))                     -> block(x) + x
        residual_down: relu(add_prev2(avg_pool(skip1(tag2(block(tag1(x))))))) -> avg_pool(x) + block(x)
        block = affine(con(relu(affine(con(.)))))"""
        self._next(_WRAPPER)  # tag1
        y = self.affine(self.con(self.relu(self.affine(self.con(x)))))
        if self._peek() == "add_prev":
            return self.relu(self.add_prev(y, x))
        self._next(_WRAPPER)  # tag2 (block output)
        self._next(_WRAPPER)  # skip1 (back to the block input)
        return self.relu(self.add_prev(self.pool(x, "avg_pool"), y))

    def build(self) -> onnx.ModelProto:
        net, g = self.net, self.g
        rows, cols = net.input_size
        x = _Value(INPUT_NAME, (3, rows, cols))
        # input_rgb_image_sized: (pixel - mean) / 256 per channel, in RGB order.
        mean = g.const("input.mean_rgb", np.array(net.mean_rgb, np.float32).reshape(1, 3, 1, 1))
        centred = g.node("Sub", [x.name, mean], "input.sub_mean")
        x = _Value(g.node("Mul", [centred, g.const("input.inv256", np.array(1 / 256, np.float32))], "input.scale"),
                   x.shape)

        x = self.pool(self.relu(self.affine(self.con(x))), "max_pool")
        n_blocks = 0
        while self._peek() == _WRAPPER:
            x = self.block(x)
            n_blocks += 1
        x = self.pool(x, "avg_pool")
        if x.shape[1:] != (1, 1):
            raise DlibFormatError(f"expected a global average pool before fc_, got {x.shape}")

        fc = self._next("fc")
        if fc.attrs["num_inputs"] != x.shape[0]:
            raise DlibFormatError(f"fc_ has {fc.attrs['num_inputs']} inputs, gets {x.shape[0]}")
        flat = g.node("Flatten", [x.name], "fc.flatten", axis=1)
        if "B" in fc.weights:
            mm = g.node("MatMul", [flat, g.const("fc.weight", fc.weights["W"])], "fc.matmul")
            g.node("Add", [mm, g.const("fc.bias", fc.weights["B"])], "fc.add", output=OUTPUT_NAME)
        else:
            g.node("MatMul", [flat, g.const("fc.weight", fc.weights["W"])], "fc.matmul", output=OUTPUT_NAME)
        if self.pos != len(net.layers):
            raise DlibFormatError(f"{len(net.layers) - self.pos} layers left after fc_")

        dim = fc.attrs["num_outputs"]
        graph = helper.make_graph(
            g.nodes, "dlib_face_recognition_resnet_model_v1",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, rows, cols])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", dim])],
            g.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="facestack.export.dlib_resnet")
        model.ir_version = 8  # what opset 17 needs; keeps the file loadable by older runtimes
        model.doc_string = f"dlib ResNet-29 face descriptor: {n_blocks} residual blocks, {dim}-D output"
        return model


def export_onnx(dat_path: Path, out_path: Path) -> dict:
    net = parse_dat(Path(dat_path).read_bytes())
    if net.input_size != (INPUT_SIZE, INPUT_SIZE):
        raise DlibFormatError(f"input is {net.input_size}, expected {INPUT_SIZE}x{INPUT_SIZE}")
    model = _Builder(net).build()
    onnx.checker.check_model(model, full_check=True)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(model.SerializeToString(deterministic=True))
    layers = [layer for layer in net.layers if layer.kind != _WRAPPER]  # tag/skip wrappers compute nothing
    (fc,) = (layer for layer in layers if layer.kind == "fc")
    return {
        "input": {"name": INPUT_NAME, "shape": ["N", 3, INPUT_SIZE, INPUT_SIZE], "colour": "RGB",
                  "scale": "0..255 float32", "layout": "NCHW",
                  "normalisation": {"in_graph": True, "mean_rgb": [round(m, 6) for m in net.mean_rgb],
                                    "divisor": 256}},
        "embedding": {"name": OUTPUT_NAME, "dim": fc.attrs["num_outputs"],
                      "metric": "cosine (L2 in dlib's own rule: same if L2 < 0.6)"},
        "alignment": {"template": ALIGN_TEMPLATE, "size": [INPUT_SIZE, INPUT_SIZE]},
        "parameters": sum(layer.params for layer in layers),
        "layers": len(layers),
    }
