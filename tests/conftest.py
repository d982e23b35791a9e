"""Shared fixtures. ``shared_data`` is ``../shared/data`` beside the project root: tests that need
it skip with a reason when it is absent, except in CI (``CI=true``), where its absence fails."""
import os
from pathlib import Path

import pytest

try:
    from hypothesis import settings

    settings.register_profile("ci", max_examples=500, deadline=None)
    settings.register_profile("dev", max_examples=60, deadline=None)
    settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")
except ImportError:  # hypothesis is a test extra; tests that need it import it themselves
    pass

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("VERIFIER_SHARED_DATA", ROOT.parent / "shared" / "data"))


def require_shared_data() -> Path:
    """The shared data folder, or skip (fail in CI) when it is missing."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but the shared data folder {SHARED_DATA} is missing")
    pytest.skip(f"shared data not found at {SHARED_DATA}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared_data()


@pytest.fixture(scope="session")
def vnncomp(shared_data) -> Path:
    return shared_data / "vnncomp"
