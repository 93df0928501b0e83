"""Run: .venv/bin/python -m pytest tests/unit/test_ddp.py -q

Scale-out: two CPU processes under ``torchrun`` (gloo) train one model with
DistributedDataParallel. Both must end with bit-identical weights, only rank 0
writes the checkpoint, and the validation metrics summed over the two shards
must be those of the whole validation set.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from torchship.data.digits import digits
from torchship.training.checkpoint import build_model, load_checkpoint
from torchship.training.metrics import classification_metrics, confusion_matrix

N_TRAIN, N_VAL = 301, 127  # odd on purpose: DistributedSampler pads, the validation shards are uneven

WORKER = textwrap.dedent(
    f"""
    import dataclasses, json, os, sys
    from pathlib import Path

    import torch

    from torchship.data.digits import digits
    from torchship.data.images import ImageSplit
    from torchship.training.classifier import ClassifierConfig, train_classifier

    out = Path(sys.argv[1])
    full = digits(val_fraction=0.2, split_seed=0)
    data = dataclasses.replace(
        full,
        train=ImageSplit(full.train.images[:{N_TRAIN}], full.train.labels[:{N_TRAIN}]),
        val=ImageSplit(full.val.images[:{N_VAL}], full.val.labels[:{N_VAL}]),
    )
    cfg = ClassifierConfig(
        model="digits_net_batchnorm", epochs=2, batch_size=32, learning_rate=5e-2, momentum=0.9,
        device="cpu", tensorboard_dir=str(out / "runs"), run_name="ddp",
    )
    result = train_classifier(cfg, data, out=out / "ddp.ckpt", progress=False)
    rank = os.environ["RANK"]
    torch.save(result.model.state_dict(), out / f"rank{{rank}}.pt")
    (out / f"rank{{rank}}.json").write_text(json.dumps({{"checkpoint": str(result.checkpoint)}}))
    """
)


@pytest.mark.slow
def test_two_processes_end_with_identical_weights(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run([*cmd, str(script), str(tmp_path)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for key in rank0:  # BatchNorm running statistics included: DDP broadcasts rank 0's buffers
        assert torch.equal(rank0[key], rank1[key]), key
    assert json.loads((tmp_path / "rank1.json").read_text())["checkpoint"] == "None"  # rank 1 wrote nothing
    assert json.loads((tmp_path / "rank0.json").read_text())["checkpoint"] == str(tmp_path / "ddp.ckpt")
    assert len(list((tmp_path / "runs" / "ddp").iterdir())) == 2  # TensorBoard from rank 0 only

    ckpt = load_checkpoint(tmp_path / "ddp.ckpt")
    assert ckpt["training"]["world_size"] == 2
    for key in rank0:
        assert torch.equal(ckpt["state_dict"][key], rank0[key]), key
    # Each rank sees ceil(301 / 2) = 151 samples per epoch (one padded): 302 per epoch in all.
    assert ckpt["resume"]["samples_seen"] == 2 * 2 * math.ceil(N_TRAIN / 2)

    # Validation ran on two uneven shards (64 + 63); the summed counts must equal one pass over all 127.
    full = digits(val_fraction=0.2, split_seed=0)
    images, labels = full.val.images[:N_VAL], full.val.labels[:N_VAL]
    with torch.no_grad():
        predictions = build_model(ckpt)(images).argmax(dim=1)
    expected = classification_metrics(confusion_matrix(predictions, labels, 10), list(full.classes))
    assert ckpt["metrics"]["val_accuracy"] == pytest.approx(expected["correct/all"] / 100, abs=1e-12)
    assert ckpt["metrics"]["val_recall"] == pytest.approx(expected["pr/recall"], abs=1e-12)
