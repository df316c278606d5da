"""Everything that touches onnxruntime: model files, sessions, and one class per model role."""

from .pack import ModelPack, PackError, load_pack

__all__ = ["ModelPack", "PackError", "load_pack"]
