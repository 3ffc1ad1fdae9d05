"""Test-wide settings: how hard the property-based tests work (PTCHECK_EXAMPLES)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def hypothesis_profile_examples() -> int:
    """Examples per property test: 10 by default, PTCHECK_EXAMPLES to change (CI uses more)."""
    return int(os.environ.get("PTCHECK_EXAMPLES", "10"))
