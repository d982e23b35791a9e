"""A sound formal verifier for neural networks."""
from .errors import ModelError, SpecError, UnsupportedOpError, VerifierError
from .network import Network, Node
from .result import Result

__all__ = ["Network", "Node", "Result", "VerifierError", "ModelError", "SpecError",
           "UnsupportedOpError"]
