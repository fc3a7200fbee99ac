"""Shared fixtures: a real SQLite file per test, settings built for it, the shared data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


@pytest.fixture
def shared() -> Path:
    """The ../shared folder beside the project; tests that need it skip when it is absent."""
    if not (SHARED / "seeds").is_dir():
        pytest.skip("../shared (seeds and fixtures) is not beside the project root")
    return SHARED
