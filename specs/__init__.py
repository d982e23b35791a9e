"""Properties of neural networks: VNN-LIB in and out, ``Spec`` objects, and builders."""
from .errors import SpecError
from .spec import Case, Conjunction, InputSet, Spec

__all__ = ["SpecError", "Spec", "Case", "Conjunction", "InputSet"]
