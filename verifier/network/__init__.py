"""What a model computes: the graph, its ops, ONNX in and out."""
from .graph import Network, Node
from .onnx_export import save_onnx
from .onnx_import import load_onnx

__all__ = ["Network", "Node", "load_onnx", "save_onnx"]
