"""TensorFlow Lite -> ONNX for the few operators MediaPipe's face_landmark model uses, without TensorFlow.

Why written here: tf2onnx converts this model but imports TensorFlow (a 2.4 GB venv, ~9 min to install) even for
`.tflite`, and tflite2onnx 0.4.1 (the TensorFlow-free converter) fails on it (`IndexError` in its layout
transform: the PReLU slopes are 3-D). The model needs seven operators; this module maps exactly those and refuses
any other, so a different model fails loudly instead of converting wrongly. The flatbuffer is read with the
`tflite` package (the schema's generated bindings); the result is checked against TensorFlow Lite's own
interpreter (`tflite-runtime`) by export/facemesh.py and tests/test_mesh.py.

The graph runs in NCHW (what ONNX convolutions take): one Transpose after the NHWC input, weights transposed
once at conversion, TensorFlow's SAME padding written out as explicit pads from the model's static shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
OPERATOR_NAMES = {code: name for name, code in vars(tflite.BuiltinOperator).items() if not name.startswith("_")}
DTYPES = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
          tflite.TensorType.INT32: np.int32}
SAME, VALID = tflite.Padding.SAME, tflite.Padding.VALID
ACTIVATIONS = {tflite.ActivationFunctionType.NONE: None, tflite.ActivationFunctionType.RELU: "Relu"}


class UnsupportedModel(RuntimeError):
    """The model uses an operator, option or tensor type this converter does not map."""


@dataclass
class Graph:
    """The ONNX graph being built: nodes in TFLite's order and their constants."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output


def same_pads(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int]) -> list[int]:
    """TensorFlow's SAME padding as ONNX pads [top, left, bottom, right]: the odd pixel goes at the end."""
    begin, end = [], []
    for n, k, s in zip(size, kernel, stride, strict=True):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        begin.append(total // 2)
        end.append(total - total // 2)
    return begin + end


class Converter:
    def __init__(self, data: bytes) -> None:
        self.model = tflite.Model.GetRootAsModel(data, 0)
        if self.model.SubgraphsLength() != 1:
            raise UnsupportedModel(f"{self.model.SubgraphsLength()} subgraphs, expected 1")
        self.sub = self.model.Subgraphs(0)
        self.graph = Graph()
        self.constants: dict[int, np.ndarray] = {}  # tensor index -> value (weights, dequantised)
        self.names: dict[int, str] = {}  # tensor index -> ONNX value name

    def shape(self, index: int) -> list[int]:
        return self.sub.Tensors(index).ShapeAsNumpy().tolist()

    def buffer(self, index: int) -> np.ndarray | None:
        tensor = self.sub.Tensors(index)
        data = self.model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, int):  # the bindings return 0 for an empty buffer (an activation)
            return None
        if tensor.Type() not in DTYPES:
            raise UnsupportedModel(f"tensor {tensor.Name().decode()} has TFLite type {tensor.Type()}")
        return np.frombuffer(data.tobytes(), DTYPES[tensor.Type()]).reshape(self.shape(index))

    def const(self, index: int) -> np.ndarray:
        if index not in self.constants:
            value = self.buffer(index)
            if value is None:
                raise UnsupportedModel(f"tensor {self.sub.Tensors(index).Name().decode()} is not a constant")
            self.constants[index] = value
        return self.constants[index]

    def value(self, index: int) -> str:
        return self.names[index]

    def activation(self, output: str, code: int) -> str:
        if code not in ACTIVATIONS:
            raise UnsupportedModel(f"fused activation {code}")
        return output if ACTIVATIONS[code] is None else self.graph.node(ACTIVATIONS[code], [output], output + "_act")

    def convert(self, input_name: str) -> onnx.ValueInfoProto:
        """Map every operator into self.graph; returns the graph's input (NHWC, batch axis `N`)."""
        (source_input,) = self.sub.InputsAsNumpy().tolist()
        _, height, width, channels = self.shape(source_input)
        graph_input = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", height, width, channels])
        self.names[source_input] = self.graph.node("Transpose", [input_name], "input_nchw", perm=[0, 3, 1, 2])
        for position in range(self.sub.OperatorsLength()):
            op = self.sub.Operators(position)
            code = self.model.OperatorCodes(op.OpcodeIndex())
            name = OPERATOR_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            handler = getattr(self, f"op_{name.lower()}", None)
            if handler is None:
                raise UnsupportedModel(f"operator {name} (#{position}) is not mapped")
            handler(op, f"{name.lower()}_{position}")
        return graph_input

    # --- operators: each reads TFLite's inputs/options and records the ONNX value of its output tensor ---

    def op_dequantize(self, op: tflite.Operator, name: str) -> None:
        # fp16 weights stored for size; folded into fp32 constants here, as TFLite does at load time
        self.constants[op.Outputs(0)] = self.const(op.Inputs(0)).astype(np.float32)

    def conv(self, op: tflite.Operator, name: str, options, depthwise: bool) -> None:
        x, w, b = op.InputsAsNumpy().tolist()
        if (options.DilationHFactor(), options.DilationWFactor()) != (1, 1):
            raise UnsupportedModel(f"{name}: dilation")
        weight = self.const(w)  # conv: [O, H, W, I]; depthwise: [1, H, W, C * multiplier]
        weight = weight.transpose(3, 0, 1, 2) if depthwise else weight.transpose(0, 3, 1, 2)
        kernel, stride = weight.shape[2:], (options.StrideH(), options.StrideW())
        pads = same_pads(self.shape(x)[1:3], kernel, stride) if options.Padding() == SAME else [0, 0, 0, 0]
        group = self.shape(x)[3] if depthwise else 1
        out = self.graph.node("Conv", [self.value(x), self.graph.constant(name + "_w", np.ascontiguousarray(weight)),
                                       self.graph.constant(name + "_b", self.const(b).astype(np.float32))],
                              name, kernel_shape=list(kernel), strides=list(stride), pads=pads, group=group)
        self.names[op.Outputs(0)] = self.activation(out, options.FusedActivationFunction())

    def op_conv_2d(self, op: tflite.Operator, name: str) -> None:
        options = tflite.Conv2DOptions()
        options.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        self.conv(op, name, options, depthwise=False)

    def op_depthwise_conv_2d(self, op: tflite.Operator, name: str) -> None:
        options = tflite.DepthwiseConv2DOptions()
        options.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        if options.DepthMultiplier() != 1:
            raise UnsupportedModel(f"{name}: depth multiplier {options.DepthMultiplier()}")
        self.conv(op, name, options, depthwise=True)

    def op_prelu(self, op: tflite.Operator, name: str) -> None:
        x, alpha = op.InputsAsNumpy().tolist()
        slope = self.const(alpha)  # [1, 1, C] broadcast over NHWC -> [C, 1, 1] over NCHW
        if slope.ndim != 3 or slope.shape[:2] != (1, 1):
            raise UnsupportedModel(f"{name}: PReLU slope of shape {slope.shape}")
        slope = np.ascontiguousarray(slope.transpose(2, 0, 1).astype(np.float32))
        slope_name = self.graph.constant(name + "_slope", slope)
        self.names[op.Outputs(0)] = self.graph.node("PRelu", [self.value(x), slope_name], name)

    def op_add(self, op: tflite.Operator, name: str) -> None:
        a, b = op.InputsAsNumpy().tolist()
        if self.shape(a) != self.shape(b):
            raise UnsupportedModel(f"{name}: broadcasting add {self.shape(a)} + {self.shape(b)}")
        options = tflite.AddOptions()
        options.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        out = self.graph.node("Add", [self.value(a), self.value(b)], name)
        self.names[op.Outputs(0)] = self.activation(out, options.FusedActivationFunction())

    def op_max_pool_2d(self, op: tflite.Operator, name: str) -> None:
        (x,) = op.InputsAsNumpy().tolist()
        options = tflite.Pool2DOptions()
        options.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        kernel, stride = (options.FilterHeight(), options.FilterWidth()), (options.StrideH(), options.StrideW())
        # SAME: ONNX's MaxPool ignores padded cells, as TFLite does
        pads = same_pads(self.shape(x)[1:3], kernel, stride) if options.Padding() == SAME else [0, 0, 0, 0]
        out = self.graph.node("MaxPool", [self.value(x)], name, kernel_shape=list(kernel), strides=list(stride),
                              pads=pads)
        self.names[op.Outputs(0)] = self.activation(out, options.FusedActivationFunction())

    def op_pad(self, op: tflite.Operator, name: str) -> None:
        x, paddings = op.InputsAsNumpy().tolist()
        p = self.const(paddings)  # [[before, after] per NHWC axis]
        if p[0].any():
            raise UnsupportedModel(f"{name}: padding the batch axis")
        order = (0, 3, 1, 2)  # NHWC rows in NCHW order
        pads = np.array([p[i, 0] for i in order] + [p[i, 1] for i in order], np.int64)
        self.names[op.Outputs(0)] = self.graph.node("Pad", [self.value(x), self.graph.constant(name + "_pads", pads)],
                                                    name, mode="constant")


def convert(tflite_file: Path, input_name: str, outputs: dict[str, tuple[str, list[int]]]) -> onnx.ModelProto:
    """The model as ONNX: input `input_name` [N, H, W, C] (NHWC, like the .tflite), and each TFLite output
    named in `outputs` reshaped to its target shape (-1 for the batch axis) under its new name."""
    converter = Converter(tflite_file.read_bytes())
    graph_input = converter.convert(input_name)
    graph = converter.graph
    graph_outputs = []
    for index in converter.sub.OutputsAsNumpy().tolist():
        source = converter.sub.Tensors(index).Name().decode()
        if source not in outputs:
            raise UnsupportedModel(f"output {source} has no target name")
        new_name, shape = outputs[source]
        target = graph.constant(new_name + "_shape", np.array(shape, np.int64))
        # the outputs are 1x1 spatial maps, so NCHW and NHWC flatten the same way
        if converter.shape(index)[1:3] != [1, 1]:
            raise UnsupportedModel(f"output {source} is not a 1x1 map: {converter.shape(index)}")
        graph.node("Reshape", [converter.value(index), target], new_name)
        graph_outputs.append(helper.make_tensor_value_info(
            new_name, TensorProto.FLOAT, ["N" if d == -1 else d for d in shape]))
    onnx_graph = helper.make_graph(graph.nodes, "face_landmark", [graph_input], graph_outputs,
                                   graph.initializers)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="facestack export/tflite_onnx.py")
    model.ir_version = 8  # onnxruntime 1.31 reads up to 10; 8 is what opset 13 was released with
    onnx.checker.check_model(model, full_check=True)
    return model
