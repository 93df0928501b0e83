"""Chapter 14 served: the three models exported (verified), then the pipeline through the native runtime and
through torchship-server (binary protocol) gives the eager pipeline's findings.

Run: .venv/bin/python -m pytest tests/part2/test_served.py -q -m slow
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from torchship import cli, tolerance
from torchship.analysis.models import (
    MALIGNANCY,
    MODEL_NAMES,
    NODULE,
    SEGMENTATION,
    EagerModels,
    RuntimeModels,
    ServerModels,
)
from torchship.analysis.pipeline import CtReport, analyze_ct, segment_ct
from torchship.data.luna.ct import Ct
from torchship.data.luna.layout import LunaLayout
from torchship.export import export_checkpoint
from torchship.models.luna import LunaModel
from torchship.models.unet import MEAP_SEGMENTATION_ARGS, UNetWrapper
from torchship.server_process import ServerProcess
from torchship.training.checkpoint import make_checkpoint, save_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scan(tiny_luna: Path) -> Ct:
    layout = LunaLayout(tiny_luna)
    uid = sorted(layout.series_paths)[0]
    return Ct(uid, layout.mhd_path(uid))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, scan: Ct) -> dict[str, Path]:
    """Seeded untrained models, shifted so the pipeline has a little of everything to do: the segmentation's
    last bias flags the top 5 % of the voxels (a few blobs survive the erosion), the nodule head leans to
    passing candidates on to malignancy."""
    torch.manual_seed(0)
    seg = UNetWrapper(**MEAP_SEGMENTATION_ARGS).eval()
    probability, _ = segment_ct(scan, EagerModels({SEGMENTATION: seg, NODULE: seg, MALIGNANCY: seg}))
    logits = np.log(probability.clip(1e-6, 1 - 1e-6) / (1 - probability.clip(1e-6, 1 - 1e-6)))
    shift = float(np.quantile(logits, 0.95))
    while (np.abs(logits - shift) < 1e-4).any():  # no voxel near the threshold: runtimes agree on every one
        shift += 1e-3
    with torch.no_grad():
        seg.unet.last.bias -= shift
    nodule, malignancy = LunaModel().eval(), LunaModel().eval()
    with torch.no_grad():
        nodule.head_linear.bias += torch.tensor([-1.0, 1.0])
    out = tmp_path_factory.mktemp("served_ckpt")
    modules = {SEGMENTATION: seg, NODULE: nodule, MALIGNANCY: malignancy}
    args = {SEGMENTATION: dict(MEAP_SEGMENTATION_ARGS), NODULE: {}, MALIGNANCY: {}}
    return {
        n: save_checkpoint(out / f"{n}.ckpt", make_checkpoint(n, modules[n], model_args=args[n])) for n in MODEL_NAMES
    }


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, checkpoints: dict[str, Path]) -> Path:
    repo = tmp_path_factory.mktemp("served_repo")
    for name, path in checkpoints.items():
        result = export_checkpoint(path, repo, ["torchscript"], max_batch_size=32)
        assert result.model == name and result.rows, result
    return repo


@pytest.fixture(scope="module")
def eager_report(checkpoints: dict[str, Path], scan: Ct) -> CtReport:
    report = analyze_ct(scan, EagerModels.from_checkpoints(*(checkpoints[n] for n in MODEL_NAMES)))
    assert 1 <= report.funnel["candidates"] <= 200, report.funnel  # the bias shift left a workable number
    assert report.funnel["nodules"] >= 1  # so the malignancy model runs too
    return report


def _assert_same_findings(got: CtReport, expected: CtReport, runtime: str) -> None:
    atol = tolerance.tolerance(runtime)
    assert got.funnel == expected.funnel
    assert len(got.findings) == len(expected.findings)
    for g, e in zip(got.findings, expected.findings, strict=True):
        assert g.voxels == e.voxels
        np.testing.assert_allclose(g.center_xyz, e.center_xyz, rtol=0, atol=1e-9)
        assert abs(g.prob_nodule - e.prob_nodule) <= atol
        assert (g.prob_mal is None) == (e.prob_mal is None)
        if e.prob_mal is not None:
            assert abs(g.prob_mal - e.prob_mal) <= atol  # type: ignore[operator]


def test_native_runtime_gives_the_eager_findings(repository: Path, scan: Ct, eager_report: CtReport) -> None:
    models = RuntimeModels(repository)
    try:
        _assert_same_findings(analyze_ct(scan, models), eager_report, "native-torchscript")
    finally:
        models.close()


def test_server_gives_the_eager_findings(repository: Path, scan: Ct, eager_report: CtReport, tmp_path: Path) -> None:
    server = ServerProcess(repository, "--device", "cpu", log_path=tmp_path / "server.log").start()
    try:
        models = ServerModels(server.url)
        _assert_same_findings(analyze_ct(scan, models), eager_report, "server")
        models.close()
        out = tmp_path / "diagnose.json"
        assert cli.main(["diagnose", str(scan.mhd_path), "--url", server.url, "--json", str(out)]) == 0
        report = json.loads(out.read_text())["reports"][0]
        assert report["funnel"] == eager_report.funnel
        assert report["prob_malignant"] == pytest.approx(eager_report.prob_malignant, abs=tolerance.tolerance("server"))
    finally:
        assert server.stop() == 0, server.log()


def test_diagnose_names_missing_models(repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / NODULE).symlink_to(repository / NODULE, target_is_directory=True)
    server = ServerProcess(partial, "--device", "cpu", "--follow-symlinks", log_path=tmp_path / "s.log").start()
    try:
        with pytest.raises(RuntimeError, match="has no ready luna_segmentation, luna_malignancy"):
            ServerModels(server.url)
    finally:
        server.stop()
