"""The only place that creates onnxruntime sessions: providers, threads and graph options."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from ..settings import get_settings


def available_providers(choice: str | None = None) -> list[str]:
    """Resolve the ENFACE_PROVIDERS setting to onnxruntime provider names, CPU always last."""
    choice = (choice or get_settings().providers).lower()
    have = ort.get_available_providers()
    if choice == "auto":
        wanted = ["CUDAExecutionProvider"] if "CUDAExecutionProvider" in have else []
    elif choice == "cpu":
        wanted = []
    else:
        names = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
        wanted = [names.get(p.strip(), p.strip()) for p in choice.split(",") if p.strip()]
        missing = [p for p in wanted if p not in have]
        if missing:
            raise RuntimeError(
                f"onnxruntime provider(s) {missing} are not available here (have {have}); "
                "install the 'gpu' extra (onnxruntime-gpu) or set ENFACE_PROVIDERS=cpu"
            )
    return [p for p in wanted if p != "CPUExecutionProvider"] + ["CPUExecutionProvider"]


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """onnxruntime threads per session: ENFACE_THREADS, else every core."""
    threads = get_settings().threads
    return threads if threads > 0 else cores()


def create_session(model: bytes | str, *, threads: int | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    # Spinning threads burn the core that decoding (or another worker process) needs.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=opts, providers=available_providers())


class Model:
    """A loaded ONNX graph with named input/outputs; subclasses add pre- and post-processing."""

    def __init__(self, model: bytes | str, *, threads: int | None = None) -> None:
        self.session = create_session(model, threads=threads)
        inp = self.session.get_inputs()[0]
        self.input_name: str = inp.name
        self.input_shape: list = list(inp.shape)
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: x})
