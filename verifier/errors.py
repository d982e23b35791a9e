"""The verifier's error hierarchy.

``VerifierError`` > ``ModelError`` > ``UnsupportedOpError``. Property errors are
``specs.SpecError`` (the ``specs`` package depends on nothing of ours); the CLI turns either
kind into one line on stderr and exit status 2.
"""
from specs.errors import SpecError


class VerifierError(Exception):
    """Base class of every error the verifier raises on purpose."""


class ModelError(VerifierError):
    """A model file that cannot be read, or a model that does not fit the property."""


class UnsupportedOpError(ModelError):
    """An ONNX op (or op configuration) the verifier does not support; names op type and node."""


#: The errors that mean "bad input" (exit status 2 on the command line).
INPUT_ERRORS = (VerifierError, SpecError)

__all__ = ["VerifierError", "ModelError", "UnsupportedOpError", "SpecError", "INPUT_ERRORS"]
