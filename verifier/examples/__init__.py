"""The bundled example: ``example.onnx`` (a 2-8-8-2 ReLU classifier), ``robust.vnnlib`` (holds)
and ``boundary.vnnlib`` (violated), made by ``make_example.py`` in this folder.

From the project root:

    verifier verify verifier/examples/example.onnx verifier/examples/robust.vnnlib
"""
from pathlib import Path

HERE = Path(__file__).resolve().parent


def path(name: str) -> Path:
    """Absolute path of a bundled example file, e.g. ``path("example.onnx")``."""
    p = HERE / name
    if not p.is_file():
        raise FileNotFoundError(f"no bundled example named {name!r} in {HERE}")
    return p
