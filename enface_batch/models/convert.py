"""Graph fixes that registry model files need before onnxruntime 1.2x/1.3x accepts them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # importing onnx (with ml_dtypes) costs ~0.45 s; only fetching and some packs need it
    import onnx


def fold_dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constant DequantizeLinear nodes (OpenCV Zoo's int8 block-quantised files) into float32 weights.

    onnxruntime >= 1.2x rejects their per-block scales ("block_size must be 0 for per-tensor quantization"),
    and the graphs carry dangling inputs that OpenCV also refuses; both go away once the weights are float.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    init = {t.name: t for t in g.initializer}
    kept = []
    for node in g.node:
        if node.op_type != "DequantizeLinear" or not all(i in init for i in node.input if i):
            kept.append(node)
            continue
        x = numpy_helper.to_array(init[node.input[0]]).astype(np.float32)
        s = numpy_helper.to_array(init[node.input[1]]).astype(np.float32)
        has_zp = len(node.input) > 2 and node.input[2]
        z = numpy_helper.to_array(init[node.input[2]]).astype(np.float32) if has_zp else np.zeros_like(s)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axis, block = attrs.get("axis", 1), attrs.get("block_size", 0)
        if s.size == 1:
            y = (x - z.reshape(())) * s.reshape(())
        elif block:
            axis %= x.ndim
            cut = [slice(None)] * x.ndim
            cut[axis] = slice(0, x.shape[axis])
            y = (x - np.repeat(z, block, axis)[tuple(cut)]) * np.repeat(s, block, axis)[tuple(cut)]
        else:
            shape = [1] * x.ndim
            shape[axis % x.ndim] = -1
            y = (x - z.reshape(shape)) * s.reshape(shape)
        g.initializer.append(numpy_helper.from_array(y.astype(np.float32), node.output[0]))
    del g.node[:]
    g.node.extend(kept)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    names = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in names and i.name in used]
    del g.input[:]
    g.input.extend(inputs)
    return model


def make_spatial_dims_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn a fixed NCHW input (YuNet ships 1x3x640x640) into N x 3 x H x W so any multiple of 32 runs."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_param, dims[2].dim_param, dims[3].dim_param = "N", "H", "W"
    for out in model.graph.output:
        odims = out.type.tensor_type.shape.dim
        odims[0].dim_param = "N"
        if len(odims) > 1:
            odims[1].dim_param = "A"
    del model.graph.value_info[:]
    return model


def make_batch_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """SFace ships with batch 1 fixed; its graph has no batch-dependent reshape, so N works."""
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    for out in model.graph.output:
        out.type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]
    return model


def prelu_as_relu_affine(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite every PRelu(x, a) with a constant per-channel slope as (1 - a) * Relu(x) + a * x.

    The same function, but onnxruntime's CPU PRelu broadcasts the slope element by element and is not NCHWc
    aware, so each one costs more than its convolution plus two layout reorders: SFace spent 50 % of its time
    in PRelu and 11 % in reorders (28 ms a face on one core). Relu, Mul and Add fuse into the NCHWc convolutions
    instead (14 ms a face). Output tensor names are kept, so anything reading intermediate maps still finds them.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    init = {t.name: t for t in g.initializer}
    nodes = []
    for node in g.node:
        if node.op_type != "PRelu" or node.input[1] not in init:
            nodes.append(node)
            continue
        x, slope = node.input
        y = node.output[0]
        a = numpy_helper.to_array(init[slope]).astype(np.float32)
        g.initializer.append(numpy_helper.from_array(1.0 - a, f"{slope}_one_minus"))
        nodes += [
            helper.make_node("Relu", [x], [f"{y}_pos"]),
            helper.make_node("Mul", [f"{y}_pos", f"{slope}_one_minus"], [f"{y}_pos_scaled"]),
            helper.make_node("Mul", [x, slope], [f"{y}_lin"]),
            helper.make_node("Add", [f"{y}_pos_scaled", f"{y}_lin"], [y]),
        ]
    del g.node[:]
    g.node.extend(nodes)
    return model
