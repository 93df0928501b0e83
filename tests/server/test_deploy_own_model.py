"""Run: .venv/bin/python -m pytest tests/server/test_deploy_own_model.py -q

The README's "Deploy your own model" run exactly as written: the Python file it shows is written
where it says, every shell command of the section runs in order (bash, in a scratch directory
with the repository's .venv and a copy of examples/). The example package is installed into a
temporary target (PIP_TARGET, on PYTHONPATH for the later commands) instead of the venv, so
nothing outside the scratch directory changes. Then the repository the commands made is served by
torchship-server, and its answers are checked against the artifacts and the task.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from server_helpers import StartServer

from torchship import tolerance
from torchship.client import Client

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Deploy your own model"


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else len(text)]


def files_and_commands(section: str) -> tuple[dict[str, str], list[str]]:
    """The ```python blocks introduced by "`NAME.py`:" and every line of the ```sh blocks, in order."""
    files, commands = {}, []
    for intro, lang, body in re.findall(r"([^\n]*)\n\n?```(python|sh)\n(.*?)```", section, re.S):
        if lang == "python":
            name = re.search(r"`([\w/]+\.py)`:\s*$", intro)
            assert name, f"a python block without a file name before it: {intro!r}"
            files[name.group(1)] = body
        else:
            commands += [line for line in body.splitlines() if line.strip() and not line.startswith("#")]
    return files, commands


def test_the_readme_section_is_parsed_completely() -> None:
    files, commands = files_and_commands(readme_section())
    assert list(files) == ["my_models.py"]
    assert any("pip install" in c for c in commands) and any(" parity " in c for c in commands)
    assert all(c.startswith(".venv/bin/") for c in commands), commands  # the project's tools, nothing else


@pytest.mark.slow
def test_readme_deploy_your_own_model_runs_as_written(tmp_path: Path, start_server: StartServer) -> None:
    files, commands = files_and_commands(readme_section())
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(ROOT / ".venv")
    shutil.copytree(ROOT / "examples", work / "examples", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    for name, body in files.items():
        (work / name).write_text(body)
    target = tmp_path / "site"  # the example package goes here, not into the shared venv
    env = {
        **os.environ,
        "PIP_TARGET": str(target),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")])),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    # The parity table the README asks for: both models, every runtime within the tolerance policy.
    table = (work / "my_parity.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    for model in ("moons_mlp", "pets_squeezenet"):
        assert model in rows and "✅" in rows[model] and "❌" not in rows[model], table

    # Both models served by torchship-server, answering as the artifacts do and as the task asks.
    repo = work / "my_repository"
    server = start_server(repo)
    from sklearn.datasets import make_moons

    points, labels = make_moons(n_samples=64, noise=0.1, random_state=12345)  # not the training seed
    x = torch.as_tensor(points, dtype=torch.float32)
    image = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    requests = {"moons_mlp": x, "pets_squeezenet": image}
    with Client(server.url) as client:
        served = {model: client.infer(model, inputs)["logits"] for model, inputs in requests.items()}
        assert client.model_metadata("moons_mlp")["inputs"][0]["name"] == "points"
    for model, inputs in requests.items():  # the server runs the very artifact parity checked against eager
        artifact = torch.jit.load(str(repo / model / "1" / "model.pt"))
        with torch.no_grad():
            tolerance.assert_close(served[model], artifact(inputs), tolerance.SAME_ARTIFACT_TOL, model)
    accuracy = float((served["moons_mlp"].argmax(1) == torch.as_tensor(labels)).float().mean())
    assert accuracy >= 0.9, f"the served moons model classifies {accuracy:.0%} of fresh points"
    assert sys.modules.get("torchship_moons") is None  # the plugin stayed out of this process
