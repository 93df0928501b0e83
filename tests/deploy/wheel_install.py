"""The wheel, installed the way users install it: into fresh venvs, with the core alone and with each extra.

Run: make test-wheel    (= .venv/bin/python -m pytest tests/deploy/wheel_install.py; minutes: it builds the wheel
and makes six venvs). Its name keeps it out of the default `pytest` run (not test_*.py); named, it runs.

Each venv reuses the set-up's torch instead of downloading a second one: deploy/core_site.py links the files of
exactly the distributions the core (or an extra) needs into the venv's own site-packages, and pip installs the
wheel with --no-index, so a dependency the wheel declares but the venv lacks fails the install by name.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tomllib
import torch

from torchship.server_process import GRPC_PORT_LINE, PORT_LINE
from torchship.tolerance import SAME_ARTIFACT_TOL, assert_close

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
from core_site import closure, core_closure, stage  # noqa: E402  (deploy/ is not a package)

pytestmark = pytest.mark.slow
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
PIP_ENV = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # this machine's pip settings (local indexes) left out
X = [[35.7], [55.9], [81.9]]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-build-isolation .`, in build/native (incremental) under the set-up's build lock; or the
    wheel TORCHSHIP_WHEEL names (built already, e.g. by `make wheel` for deploy/container.sh in the same run)."""
    if given := os.environ.get("TORCHSHIP_WHEEL"):
        return Path(given).resolve()
    out = tmp_path_factory.mktemp("wheel")
    cmd = ["flock", str(ROOT / "build/.bootstrap.lock"), sys.executable, "-m", "pip", "wheel"]
    cmd += ["--no-build-isolation", "--no-deps", "-q", "-w", str(out), str(ROOT)]
    subprocess.run(cmd, check=True, env=PIP_ENV, cwd=ROOT, timeout=1800)
    (found,) = out.glob("torchship-*.whl")
    return found


def make_venv(path: Path, wheel: Path, distributions: set[str], extra: str = "") -> Path:
    """A venv holding ``distributions`` (linked from the set-up's) and the wheel, installed by pip --no-index."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    (site,) = path.glob("lib/python3.*/site-packages")
    stage(site, distributions, os.symlink)
    target = f"{wheel}[{extra}]" if extra else str(wheel)
    pip = [sys.executable, "-m", "pip", "--python", str(path / "bin/python"), "install", "--no-index", "-q", target]
    done = subprocess.run(pip, capture_output=True, text=True, env=PIP_ENV)
    assert done.returncode == 0, f"pip install {target} into a venv without network:\n{done.stdout}{done.stderr}"
    return path


def run(venv: Path, *argv: str, check: bool = True, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=venv, timeout=timeout_s)
    if check:
        assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def outputs(stdout: str, name: str = "t_c") -> torch.Tensor:
    """``t_c: [[...], ...]`` as printed by ``torchship infer`` and ``torchship predict``."""
    m = re.search(rf"^{name}: (.*)$", stdout, re.MULTILINE)
    assert m, stdout
    return torch.tensor(ast.literal_eval(m.group(1)), dtype=torch.float32)


@pytest.fixture(scope="module")
def expected(thermometer_repository: Path) -> torch.Tensor:
    """The artifact run by PyTorch itself: what every runtime must answer within SAME_ARTIFACT_TOL."""
    (artifact,) = thermometer_repository.glob("thermometer_linear/*/model.pt")
    return torch.jit.load(str(artifact))(torch.tensor(X))


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    return make_venv(tmp_path_factory.mktemp("venv") / "core", wheel, core_closure())


def test_the_wheel_holds_the_extension_the_server_and_its_launcher(wheel: Path) -> None:
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert re.fullmatch(r"torchship-0\.1\.0-cp3\d+-cp3\d+-linux_x86_64\.whl", wheel.name)
    assert any(re.fullmatch(r"torchship/_C\.cpython-3\d+-x86_64-linux-gnu\.so", n) for n in names)
    assert "torchship/bin/torchship-server" in names and "torchship/_build_info.py" in names
    assert any(n.endswith(".data/scripts/torchship-server") for n in names)


def test_core_venv_holds_the_core_and_nothing_of_an_extra(core_venv: Path) -> None:
    for module in ("sklearn", "onnx", "onnxruntime", "tensorboard", "tqdm", "torchvision", "tritonclient"):
        done = run(core_venv, "python", "-c", f"import {module}", check=False)
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, module
    # torch is the set-up's, not a second copy
    done = run(core_venv, "python", "-c", "import torch; print(torch.__file__)")
    assert Path(done.stdout.strip()).resolve().is_relative_to(Path(torch.__file__).resolve().parents[1])


def test_core_venv_cli_help_and_the_missing_extra_named(core_venv: Path) -> None:
    assert "serve" in run(core_venv, "torchship", "--help").stdout
    assert "--model-repository" in run(core_venv, "torchship-server", "--help").stdout
    done = run(core_venv, "torchship", "train", "digits-net", "--epochs", "1", check=False)
    assert done.returncode == 1 and "pip install 'torchship[train]'" in done.stderr, done.stderr
    done = run(core_venv, "torchship", "export", "thermometer_linear", "--formats", "onnx", "--repository", "r",
               check=False)  # fmt: skip
    assert done.returncode == 1 and "pip install 'torchship[export]'" in done.stderr, done.stderr


def test_the_installed_binary_finds_torch_through_its_relative_runpath(core_venv: Path) -> None:
    (binary,) = core_venv.glob("lib/python3.*/site-packages/torchship/bin/torchship-server")
    dynamic = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True, check=True).stdout
    runpath = re.search(r"\((?:RUNPATH|RPATH)\)\s+Library (?:runpath|rpath): \[(.*)\]", dynamic)
    assert runpath and runpath.group(1).split(":")[0] == "$ORIGIN/../../torch/lib", dynamic
    assert str(ROOT) not in runpath.group(1), f"the build machine's paths leak into the wheel: {runpath.group(1)}"
    # run directly, no launcher, no LD_LIBRARY_PATH
    assert "--model-repository" in run(core_venv, str(binary), "--help").stdout


def test_core_venv_infers_in_process(core_venv: Path, thermometer_repository: Path, expected: torch.Tensor) -> None:
    done = run(core_venv, "torchship", "infer", "--repository", str(thermometer_repository),
               "--model", "thermometer_linear", "--data", json.dumps(X))  # fmt: skip
    assert_close(outputs(done.stdout), expected, SAME_ARTIFACT_TOL, "torchship infer in the core venv")


@contextlib.contextmanager
def server(venv: Path, repository: Path, *flags: str) -> Iterator[dict[str, int]]:
    """``venv``'s ``torchship serve`` on free loopback ports; yields the ports printed (``http``, ``grpc``) once
    ready, and on exit expects SIGTERM to end it with exit code 0. Its log: ``venv/server.log``."""
    cmd = [str(venv / "bin/torchship"), "serve", "--model-repository", str(repository), "--http-port", "0", *flags]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}
    log_path = venv / "server.log"
    with (
        log_path.open("w") as log,
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env) as proc,
    ):
        try:
            assert proc.stdout is not None
            ports: dict[str, int] = {}
            want = {"http", "grpc"} if "--grpc-port" in flags else {"http"}
            for line in proc.stdout:  # ends at EOF if the server dies first
                if m := GRPC_PORT_LINE.search(line):
                    ports["grpc"] = int(m.group(1))
                elif m := PORT_LINE.search(line):
                    ports["http"] = int(m.group(1))
                if set(ports) == want:
                    break
            assert set(ports) == want, log_path.read_text()
            deadline = time.monotonic() + 120
            while httpx.get(f"http://127.0.0.1:{ports['http']}/v2/health/ready").status_code != 200:
                assert time.monotonic() < deadline, f"not ready in 120 s: {log_path.read_text()}"
                time.sleep(0.1)
            yield ports
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, log_path.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_core_venv_serves_and_its_client_predicts(
    core_venv: Path, thermometer_repository: Path, expected: torch.Tensor
) -> None:
    (core_venv / "x.json").write_text(json.dumps(X))
    with server(core_venv, thermometer_repository, "--device", "cpu") as ports:
        url = f"http://127.0.0.1:{ports['http']}"
        done = run(
            core_venv, "torchship", "predict", "--model", "thermometer_linear", "--input", "x.json", "--url", url
        )
    assert_close(outputs(done.stdout), expected, SAME_ARTIFACT_TOL, "served from the core venv")


def test_a_different_torch_is_refused_by_import_and_by_the_server(tmp_path: Path, wheel: Path) -> None:
    venv = make_venv(tmp_path / "other-torch", wheel, core_closure())
    (version_py,) = venv.glob("lib/python3.*/site-packages/torch/version.py")
    text = version_py.read_text()
    version_py.unlink()  # a link to the set-up's: replace it, never write through it
    version_py.write_text(re.sub(r"__version__ = .*", "__version__ = '2.99.0'", text))
    message = rf"built against torch {re.escape(torch.__version__)} but torch 2\.99\.0 is installed"
    for argv in (["python", "-c", "import torchship"], ["torchship-server", "--help"], ["torchship", "serve"]):
        done = run(venv, *argv, check=False)
        assert done.returncode != 0 and re.search(message, done.stderr), (argv, done.stderr)


@pytest.mark.parametrize("extra", ["train", "export", "grpc"])
def test_each_extra_installs_and_unlocks_its_commands(
    tmp_path: Path, wheel: Path, thermometer_repository: Path, expected: torch.Tensor, extra: str
) -> None:
    venv = make_venv(tmp_path / extra, wheel, core_closure() | closure(EXTRAS[extra]), extra)
    if extra == "train":
        run(venv, "torchship", "train", "digits-net", "--epochs", "1", "--no-progress", "--out", "d.ckpt", "--tb-dir",
            "runs")  # fmt: skip
        assert (venv / "d.ckpt").is_file() and any((venv / "runs").rglob("events.out.tfevents.*"))
    elif extra == "export":
        run(venv, "torchship", "export", "thermometer_linear", "--formats", "onnx", "--repository", "r")
        assert any((venv / "r/thermometer_linear").rglob("model.onnx"))
    else:
        code = (
            "import sys, numpy as np, tritonclient.grpc as g\n"
            "c = g.InferenceServerClient(sys.argv[1])\n"
            f"i = g.InferInput('t_u', [3, 1], 'FP32'); i.set_data_from_numpy(np.array({X!r}, dtype=np.float32))\n"
            "print('t_c:', c.infer('thermometer_linear', [i]).as_numpy('t_c').tolist())\n"
        )
        with server(venv, thermometer_repository, "--grpc-port", "0", "--device", "cpu") as ports:
            done = run(venv, "python", "-c", code, f"127.0.0.1:{ports['grpc']}")
        assert_close(outputs(done.stdout), expected, SAME_ARTIFACT_TOL, "gRPC client from the grpc extra")
