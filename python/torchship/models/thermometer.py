"""Chapters 5 and 6: the thermometer models (unknown units -> Celsius)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from torchship.models.registry import TensorSpec, Weights, register_model


class ThermometerLinear(nn.Module):
    """The chapter 5 model ``t_c = w * t_u + b``.

    ``input_scale`` is the book's input normalisation (``t_un = 0.1 * t_u``),
    kept inside the model so every runtime takes raw readings.
    """

    def __init__(self, input_scale: float = 0.1) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.b = nn.Parameter(torch.zeros(()))
        self.register_buffer("input_scale", torch.tensor(float(input_scale)))

    def forward(self, t_u: torch.Tensor) -> torch.Tensor:
        return self.w * (t_u * self.input_scale) + self.b


class ThermometerMLP(nn.Module):
    """The chapter 6 model that is trained: Linear(1, H) - Tanh - Linear(H, 1), H = 8."""

    def __init__(self, hidden: int = 8, input_scale: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("input_scale", torch.tensor(float(input_scale)))
        self.seq = nn.Sequential(
            OrderedDict(
                [
                    ("hidden_linear", nn.Linear(1, hidden)),
                    ("hidden_activation", nn.Tanh()),
                    ("output_linear", nn.Linear(hidden, 1)),
                ]
            )
        )

    def forward(self, t_u: torch.Tensor) -> torch.Tensor:
        return self.seq(t_u * self.input_scale)


def _register(name: str, builder: type[nn.Module], description: str) -> None:
    register_model(
        name,
        inputs=(TensorSpec("t_u", (-1, 1)),),
        outputs=(TensorSpec("t_c", (-1, 1)),),
        # the book's 11 readings (chapter 5); its recipes are written by hand (training/thermometer.py)
        weights=[Weights(name, preprocessing={"input_scale": 0.1, "applied_in_model": True}, dataset="thermometer")],
        description=description,
        max_batch_size=256,
    )(builder)


_register("thermometer_linear", ThermometerLinear, "Chapter 5 linear thermometer model w * (0.1 t_u) + b")
_register("thermometer_mlp", ThermometerMLP, "Chapter 6 thermometer MLP Linear(1,8)-Tanh-Linear(8,1)")
