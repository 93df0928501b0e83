"""Start-up choices of torchship-server: which models it loads, and what it reports about the process."""

from __future__ import annotations

import ctypes.util
import shutil
from pathlib import Path

import httpx
import pytest
import torch
from server_helpers import StartServer


@pytest.fixture
def two_model_repository(tmp_path: Path, thermometer_repository: Path, net_repository: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(thermometer_repository, repo)
    shutil.copytree(net_repository / "net", repo / "net")
    return repo


def test_model_flag_loads_only_the_named_models(start_server: StartServer, two_model_repository: Path) -> None:
    server = start_server(two_model_repository, "--model", "net")
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/v2/models/net/ready").status_code == 200
        other = http.get("/v2/models/thermometer_linear")
        assert other.status_code == 404, other.text
        assert "(available: net)" in other.json()["error"], other.text
    assert server.stop() == 0
    ready_line = next(line for line in server.log().splitlines() if "ready:" in line)
    assert "net v1" in ready_line and "thermometer_linear" not in ready_line, ready_line


def test_model_flag_naming_a_missing_model_stops_the_server(
    start_server: StartServer, two_model_repository: Path
) -> None:
    server = start_server(two_model_repository, "--model", "net", "--model", "resnet", wait_ready=False)
    assert server.proc is not None
    assert server.proc.wait(timeout=60) == 1
    server.kill()
    assert "model 'resnet' not found in" in server.log(), server.log()


def test_start_up_log_names_threads_and_allocator(start_server: StartServer, thermometer_repository: Path) -> None:
    server = start_server(thermometer_repository, "--intra-op-threads", "1")
    assert server.stop() == 0  # the log is flushed at exit
    log = server.log()
    # CMake links tcmalloc when Debian's libtcmalloc-minimal4 is installed (tools/bootstrap.sh installs it).
    allocator = "tcmalloc" if ctypes.util.find_library("tcmalloc_minimal") else "system malloc"
    assert f"torch intra-op threads: 1, allocator: {allocator}" in log, log


def test_precision_and_layout_flags_reach_the_model(
    start_server: StartServer, net_repository: Path, net_eager: torch.nn.Module
) -> None:
    from torchship import tolerance
    from torchship.client import Client

    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = net_eager(x)
    server = start_server(net_repository, "--precision", "bf16", "--channels-last")
    with Client(server.url) as client:
        (got,) = client.infer("net", x).values()
    assert got.dtype == torch.float32  # the wire contract is config.json's, whatever the run precision
    c = tolerance.assert_close(got, expected, tolerance.HALF_PRECISION_TOL[("net", "bf16")], "server in bf16")
    assert c.max_abs > 0
    assert server.stop() == 0
    # docs/variants.md: no bf16 variant was exported, so the TorchScript fp32 artifact is converted at load.
    converted = "net v1 (torchscript any fp32 contiguous (model.pt), converted at load to bf16 channels_last)"
    assert converted in server.log()


def test_torchship_serve_passes_its_arguments_to_the_server() -> None:
    import subprocess

    from torchship.cli import parse_args
    from torchship.server_cli import server_argv
    from torchship.server_process import server_binary

    argv = ["--model-repository", "repo", "--precision", "fp16", "--channels-last", "--http-port", "0"]
    args = parse_args(["serve", *argv])
    assert server_argv(args) == [str(server_binary(search_path=True)), *argv]
    # --help reaches the server, which declares every flag once.
    helped = parse_args(["serve", "--help"])
    help_text = subprocess.run(server_argv(helped), capture_output=True, text=True, check=True).stdout
    for flag in ("--max-header-bytes", "--drain-timeout-s", "--grpc-port", "--max-connections"):
        assert flag in help_text, flag
