"""Fixtures for the part 2 tests: small generated LUNA layouts (helpers: luna_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from luna_helpers import TINY

from torchship.data.luna.synth import write_dataset


@pytest.fixture(scope="session")
def tiny_luna(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three generated 32x64x64 scans in the LUNA16 layout (about a second to write)."""
    out = tmp_path_factory.mktemp("tiny_luna")
    write_dataset(TINY, out, log=lambda _: None)
    return out
