"""Part of a registry ONNX graph as a trainable torch module, for fine-tuning (development only, needs torch).

Covers the op sets of the Cydral dlib-models networks and SFace (Conv with groups, BatchNormalization, the
per-channel Mul/Add of an affine or a PReLU written out, Relu, Pad, MaxPool, AveragePool, GlobalAveragePool,
Flatten, Gemm, Softmax, Reshape of weights). Weights become parameters (batch norms keep their running
statistics and train their scale and shift), and the graph runs node by node from a named input to a named
output. Written here rather than depending on onnx2torch because these ops are all it takes, the slice between
two inner tensors is what fine-tuning needs, and the result must export back to ONNX with the same meaning
(tested against onnxruntime).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def trunk(path: str | Path, output: str, start: str | None = None):
    """The graph at `path` as a torch module computing tensor `output` from tensor `start` (default: the
    graph's input)."""
    import onnx
    import torch
    import torch.nn.functional as F
    from onnx import numpy_helper
    from torch import nn

    graph = onnx.load(str(path)).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:  # weights reshaped by the graph itself (SFace): fold them into constants
        if n.op_type == "Reshape" and all(i in init for i in n.input):
            init[n.output[0]] = init[n.input[0]].reshape([int(v) for v in init[n.input[1]]])
        elif n.op_type == "Constant":
            init[n.output[0]] = numpy_helper.to_array(_attrs(n)["value"])
    start = start or graph.input[0].name
    producer = {o: n for n in graph.node for o in n.output}
    needed, todo = set(), [output]
    while todo:  # the nodes between start and output, walking back from output
        name = todo.pop()
        if name == start or name in init or name in needed:
            continue
        if name not in producer:
            raise ValueError(f"{path}: {output!r} does not depend on {start!r} alone (reached {name!r})")
        needed.add(name)
        todo += list(producer[name].input)
    nodes = [(n.op_type, list(n.input), n.output[0], _attrs(n)) for n in graph.node if n.output[0] in needed]

    class Trunk(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.params = nn.ParameterDict()
            self.consts: dict[str, list[int]] = {}
            for op, ins, _, _ in nodes:
                for j, name in enumerate(ins):
                    if name not in init:
                        continue
                    if op == "Pad":  # the pads vector stays a constant
                        self.consts[name] = [int(v) for v in init[name]]
                    elif op == "BatchNormalization" and j >= 3:  # running statistics: kept, not trained
                        self.register_buffer(self._key(name), torch.tensor(np.array(init[name], np.float32)))
                    else:
                        self.params[self._key(name)] = nn.Parameter(torch.tensor(np.array(init[name], np.float32)))

        @staticmethod
        def _key(name: str) -> str:
            return "w_" + name.replace(".", "_")

        def _get(self, env: dict, name: str):
            if name in env:
                return env[name]
            key = self._key(name)
            return self.params[key] if key in self.params else getattr(self, key)

        def forward(self, x):
            env = {start: x}
            for op, ins, out, a in nodes:
                v = [self._get(env, i) for i in ins if i and i not in self.consts]
                if op == "Conv":
                    p = a.get("pads", [0, 0, 0, 0])
                    b = v[2] if len(v) > 2 else None
                    y = F.conv2d(v[0], v[1], b, a.get("strides", [1, 1]), (p[0], p[1]), 1, a.get("group", 1))
                elif op == "BatchNormalization":
                    x0, g, beta, mean, var = v
                    sh = (1, -1, 1, 1)
                    y = (x0 - mean.view(sh)) / torch.sqrt(var.view(sh) + a.get("epsilon", 1e-5))
                    y = y * g.view(sh) + beta.view(sh)
                elif op == "Mul":
                    y = v[0] * v[1]
                elif op == "Add":
                    y = v[0] + v[1]
                elif op == "Sub":
                    y = v[0] - v[1]
                elif op == "Relu":
                    y = F.relu(v[0])
                elif op == "Pad":
                    p = self.consts[ins[1]]  # ONNX: [x1_begin, x2_begin, ..., x1_end, x2_end, ...]
                    k = len(p) // 2
                    torch_pads = []
                    for d in reversed(range(k)):
                        torch_pads += [p[d], p[d + k]]
                    y = F.pad(v[0], torch_pads)
                elif op == "MaxPool":
                    y = F.max_pool2d(v[0], a["kernel_shape"], a["strides"], ceil_mode=bool(a.get("ceil_mode", 0)))
                elif op == "AveragePool":
                    y = F.avg_pool2d(v[0], a["kernel_shape"], a["strides"], ceil_mode=bool(a.get("ceil_mode", 0)))
                elif op == "GlobalAveragePool":
                    y = v[0].mean((2, 3), keepdim=True)
                elif op == "Flatten":
                    y = v[0].flatten(a.get("axis", 1))
                elif op == "Dropout":
                    y = v[0]
                elif op == "Gemm":
                    y = v[0] @ (v[1].T if a.get("transB", 0) else v[1]) + v[2]
                elif op == "Softmax":
                    y = torch.softmax(v[0], a.get("axis", -1))
                else:
                    raise NotImplementedError(f"{op} in {path}")
                env[out] = y
            return env[output]

    module = Trunk()
    _check(module, path, start, output)
    return module


def _check(module, path: str | Path, start: str, output: str) -> None:
    """Refuse a translation that disagrees with onnxruntime on a random input (before any training)."""
    import onnx
    import onnxruntime as ort
    import torch

    from ..models.heads import _with_outputs

    graph = onnx.load(str(path)).graph
    inp = graph.input[0]
    shape = [d.dim_value or 2 for d in inp.type.tensor_type.shape.dim]
    x = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    names = [start, output] if start != inp.name else [output]
    sess = ort.InferenceSession(_with_outputs(str(path), names))
    got = dict(zip(names, sess.run(names, {inp.name: x}), strict=True))
    feed = got.get(start, x)
    with torch.no_grad():
        mine = module(torch.from_numpy(feed)).numpy()
    err = float(np.abs(mine - got[output]).max() / max(1.0, float(np.abs(got[output]).max())))
    if err > 1e-4:
        raise RuntimeError(f"{path}: the torch translation of {start} -> {output} is off by {err:.2e}")
