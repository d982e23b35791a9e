"""A sound formal verifier for neural networks."""
from .errors import ModelError, SpecError, UnsupportedOpError, VerifierError
from .network import Network, Node
from .network.onnx_export import save_onnx
from .network.onnx_import import load_onnx
from .result import Result
from .verify import verify

__all__ = ["verify", "Network", "Node", "Result", "load_onnx", "save_onnx", "VerifierError", "ModelError", "SpecError",
           "UnsupportedOpError"]
