"""Fixtures for the server tests: torchship-server processes on loopback, port 0, stopped with SIGTERM.

Starting and stopping goes through torchship.server_process (the port from the
server's stdout line, readiness polled on /v2/health/ready, bounded waits).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import StartServer

from torchship.server_process import ServerProcess


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Starts servers for one test: ``start_server(repository, "--max-batch-size", "8", ...)``; kills leftovers."""
    started: list[ServerProcess] = []

    def start(repository: Path, *args: str, log_level: str = "info", wait_ready: bool = True) -> ServerProcess:
        server = ServerProcess(
            repository,
            "--device",
            "cpu",
            "--log-level",
            log_level,
            *args,
            log_path=tmp_path / f"server{len(started)}.log",
        )
        started.append(server)
        return server.start(wait_ready=wait_ready)

    yield start
    for server in started:
        server.kill()


@pytest.fixture(scope="module")
def thermometer_server(
    thermometer_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server on the thermometer repository, shared by a test module."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    server = ServerProcess(thermometer_repository, "--device", "cpu", log_path=log).start()
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
def http(thermometer_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=thermometer_server.url, timeout=30.0) as client:
        yield client


# One model of each zoo family that declares image preprocessing (docs/images.md), random-init and seeded, with
# its max batch size. CycleGAN is shrunk (ngf 4, one block): its preprocessing is the full model's.
IMAGE_MODELS: dict[str, tuple[dict[str, Any] | None, int]] = {
    "resnet18": (None, 4),  # ImageNet: resnet18/50/101 and alexnet share one declaration
    "net": (None, 8),  # CIFAR-2: net* and cifar2_fc*
    "digits_net": (None, 8),  # digits: digits_net*
    "cyclegan": ({"ngf": 4, "n_blocks": 1}, 2),
}


@pytest.fixture(scope="session")
def image_checkpoints() -> dict[str, dict[str, Any]]:
    """``IMAGE_MODELS`` as in-memory checkpoints (seed 0); ``build_model`` makes each one's eager reference."""
    from torchship.export import random_init_checkpoint

    return {name: random_init_checkpoint(name, args, seed=0) for name, (args, _) in IMAGE_MODELS.items()}


@pytest.fixture(scope="session")
def image_repository(tmp_path_factory: pytest.TempPathFactory, image_checkpoints: dict[str, dict[str, Any]]) -> Path:
    """``image_checkpoints`` exported as TorchScript, each with the preprocess.pt (and CycleGAN's postprocess.pt)
    export verified and listed in config.json's ``image``; shared by the image route and parity tests."""
    from torchship.export import export_checkpoint

    repo = tmp_path_factory.mktemp("image_repo")
    for name, checkpoint in image_checkpoints.items():
        export_checkpoint(checkpoint, repo, ["torchscript"], max_batch_size=IMAGE_MODELS[name][1])
    return repo
