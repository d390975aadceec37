"""YuNet 2023mar (OpenCV Zoo, MIT) -> fp32 ONNX with a dynamic N x 3 x H x W input.

The shipped graph is fixed at 1x3x640x640 only through its declared shapes and the `[1, -1, k]`
targets of the Reshapes that flatten each head; with those made batch-generic the same weights run on
any batch and any H, W that are multiples of 32.

The input is uint8 pixels, cast to float32 by the graph's first node: the network sees exactly the values
it saw before (pixels are integers 0..255), while every copy of a 640x640 image between the pipeline,
Triton and the detector (shared memory on CPU, PCIe on GPU) moves 1.2 MB instead of 4.9 MB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facestack.pipeline.detection import OUTPUT_NAMES

INPUT_NAME = "input"


def make_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = model.graph
    reshape_shapes = {node.input[1] for node in graph.node if node.op_type == "Reshape"}
    for init in graph.initializer:
        if init.name in reshape_shapes:
            shape = numpy_helper.to_array(init).copy()
            if shape[0] == 1:
                shape[0] = 0  # 0 = "copy the input's batch dimension"
                init.CopyFrom(numpy_helper.from_array(shape.astype(np.int64), init.name))
    (graph_input,) = graph.input
    graph_input.name = INPUT_NAME
    for node in graph.node:
        node.input[:] = [INPUT_NAME if name == "input" else name for name in node.input]
    for dim, name in zip(graph_input.type.tensor_type.shape.dim, ("N", None, "H", "W"), strict=True):
        if name:
            dim.Clear()
            dim.dim_param = name
    for output in graph.output:
        dims = output.type.tensor_type.shape.dim
        dims[0].Clear()
        dims[0].dim_param = "N"
        dims[1].Clear()
        dims[1].dim_param = f"anchors_{output.name.split('_')[1]}"
    del graph.value_info[:]  # intermediate shapes were inferred for 640x640 only
    return model


def uint8_input(model: onnx.ModelProto) -> onnx.ModelProto:
    """Declare the input uint8 and cast it to float32 in front of the first layer."""
    graph = model.graph
    cast_output = f"{INPUT_NAME}_float"
    for node in graph.node:
        node.input[:] = [cast_output if name == INPUT_NAME else name for name in node.input]
    graph.node.insert(0, helper.make_node("Cast", [INPUT_NAME], [cast_output], to=TensorProto.FLOAT,
                                          name="input_to_float"))
    graph.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    return model


def export_onnx(src: Path, out_path: Path) -> dict:
    model = uint8_input(make_dynamic(onnx.load(str(src))))
    names = {o.name for o in model.graph.output}
    if names != set(OUTPUT_NAMES):
        raise ValueError(f"unexpected YuNet outputs {sorted(names)}")
    onnx.checker.check_model(model, full_check=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    return {
        "input": {"name": INPUT_NAME, "shape": ["N", 3, "H", "W"], "colour": "BGR",
                  "scale": "0..255 uint8 (cast to float32 in the graph)",
                  "layout": "NCHW", "note": "H and W multiples of 32; the pipeline letterboxes to 640x640"},
        "outputs": list(OUTPUT_NAMES),
        "decoding": "score = sqrt(cls * obj); anchor-grid boxes and 5 landmarks at strides 8/16/32; NMS 0.3",
    }
