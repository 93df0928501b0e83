"""The model: a small MLP that tells scikit-learn's two interleaved half-moons apart.

Registered with ``torchship.register_model``; torchship imports this module
through the ``torchship.models`` entry point of this package's pyproject.toml.
"""

from __future__ import annotations

import torch
from torch import nn

import torchship
from torchship import TensorSpec, Weights

LABELS = ("upper moon", "lower moon")


@torchship.register_model(
    inputs=[TensorSpec("points", (-1, 2))],
    outputs=[TensorSpec("logits", (-1, len(LABELS)))],
    weights=[
        Weights(
            "moons_mlp",
            labels=LABELS,
            dataset="moons",  # the data set registered in torchship_moons.data: `torchship train moons-mlp`
            preprocessing={"source": "sklearn.datasets.make_moons, (x, y) as they come"},
        )
    ],
    max_batch_size=128,
)
def moons_mlp(hidden: int = 16, num_classes: int = 2) -> nn.Module:
    """Two tanh layers of ``hidden`` units: 2 -> hidden -> hidden -> classes."""
    return nn.Sequential(
        nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, num_classes)
    )


def predict(model: nn.Module, points: torch.Tensor) -> list[str]:
    """Class names for a batch of points: what a client does with the served logits."""
    return [LABELS[i] for i in model(points).argmax(1).tolist()]
