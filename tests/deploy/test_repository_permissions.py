"""A model repository is read by a server that may run as another user (a container's 65532, a pod's).

Run: .venv/bin/python -m pytest tests/deploy/test_repository_permissions.py -q
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from torchship.export import export_checkpoint


@pytest.mark.slow  # 3-7 s: trains the thermometer model (session fixture) and exports it
def test_an_export_is_readable_by_other_users_under_the_usual_umask(
    thermometer_checkpoint: Path, tmp_path: Path
) -> None:
    """Found by deploy/container.sh: the version directory came from mkdtemp (mode 0700), so the container's
    server (uid 65532) could not read model.pt and the model failed to load with `Permission denied`."""
    old = os.umask(0o022)
    try:
        export_checkpoint(thermometer_checkpoint, tmp_path / "repo", ["torchscript"])
    finally:
        os.umask(old)
    paths = [p for p in (tmp_path / "repo").rglob("*")]
    assert any(p.name == "model.pt" for p in paths)
    for p in paths:
        mode = stat.S_IMODE(p.stat().st_mode)
        wanted = 0o755 if p.is_dir() else 0o644
        assert mode & wanted == wanted, f"{p.relative_to(tmp_path)} has mode {mode:o}, other users cannot read it"
