"""Properties of neural networks: VNN-LIB in and out, ``Spec`` objects, and builders."""
from .builders import robustness
from .errors import SpecError
from .normal_form import normalize
from .spec import Case, Conjunction, InputSet, Spec
from .vnnlib import parse_vnnlib, read_vnnlib
from .writer import format_vnnlib, write_vnnlib

__all__ = ["SpecError", "Spec", "Case", "Conjunction", "InputSet", "read_vnnlib", "parse_vnnlib",
           "write_vnnlib", "format_vnnlib", "robustness", "normalize"]
