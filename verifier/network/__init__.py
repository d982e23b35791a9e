"""What a model computes: the graph, its ops, ONNX in and out."""
from .graph import Network, Node

__all__ = ["Network", "Node"]
