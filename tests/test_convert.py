"""Graph rewrites applied to registry models at fetch time compute the same function as the original graph."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from enface_batch.models.convert import prelu_as_relu_affine


def _conv_prelu_graph(slope: np.ndarray) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    c = slope.size
    w = numpy_helper.from_array(rng.normal(size=(c, 3, 3, 3)).astype(np.float32), "w")
    a = numpy_helper.from_array(slope.reshape(c, 1, 1).astype(np.float32), "a")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["z"], pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["z", "a"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c, 16, 16])],
        [w, a],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_prelu_rewrite_is_the_same_function_for_any_slope():
    # SFace's slopes run from -0.81 to 1.12: negative, fractional and above one must all come out the same.
    slope = np.array([-0.8, -0.1, 0.0, 0.25, 0.5, 0.99, 1.0, 1.12])
    x = np.random.default_rng(1).normal(size=(2, 3, 16, 16)).astype(np.float32)
    before = _run(_conv_prelu_graph(slope), x)
    rewritten = prelu_as_relu_affine(_conv_prelu_graph(slope))
    assert not [n for n in rewritten.graph.node if n.op_type == "PRelu"]
    assert {o.name for o in rewritten.graph.output} == {"y"}
    np.testing.assert_allclose(_run(rewritten, x), before, rtol=1e-5, atol=1e-5)
    assert (before < 0).any() and (before > 0).any()  # both branches were exercised
