"""Chapters 5 and 6: fitting the thermometer models, as the book does it.

``train_linear`` offers the chapter 5 procedure in each of its guises:
hand-written gradients, autograd, and ``torch.optim`` (SGD or Adam).
``train_mlp`` is chapter 6's ``nn.Sequential`` model with SGD.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

from torchship.data.thermometer import split_indices, thermometer_data
from torchship.models.thermometer import ThermometerLinear, ThermometerMLP
from torchship.training.checkpoint import make_checkpoint, save_checkpoint

Method = Literal["manual", "autograd", "sgd", "adam"]


class TrainingDiverged(RuntimeError):
    """The loss stopped being finite: the learning rate is too large for the input scale."""


@dataclass
class ThermometerConfig:
    epochs: int = 5000
    learning_rate: float = 1e-2
    input_scale: float = 0.1  # the book's normalisation t_un = 0.1 * t_u; 1.0 = raw input
    method: Method = "autograd"
    val_fraction: float = 0.0  # 0.2 is the book's split; 0 trains on all 11 readings (its headline result)
    seed: int = 0
    hidden: int = 8  # MLP only


@dataclass
class ThermometerResult:
    model: torch.nn.Module  # trained, in eval mode, parameters frozen
    train_loss: float
    val_loss: float | None
    history: list[tuple[int, float, float | None]] = field(default_factory=list)

    @property
    def params(self) -> dict[str, float]:
        return {k: round(float(v), 6) for k, v in self.model.named_parameters() if v.numel() == 1}


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred - target) ** 2).mean()


def _check_finite(loss: float, epoch: int, cfg: ThermometerConfig) -> None:
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"loss became {loss} at epoch {epoch} with learning rate {cfg.learning_rate} and input scale "
            f"{cfg.input_scale}: training diverged (the book's chapter 5 shows this for lr 1e-2 on raw input). "
            "Lower --learning-rate or keep --input-scale 0.1; nothing was written."
        )


def _split(cfg: ThermometerConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    t_u, t_c = thermometer_data()
    if cfg.val_fraction <= 0:
        return t_u, t_c, None, None
    train_idx, val_idx = split_indices(len(t_u), cfg.val_fraction, cfg.seed)
    return t_u[train_idx], t_c[train_idx], t_u[val_idx], t_c[val_idx]


def train_linear(cfg: ThermometerConfig, progress: bool = True) -> ThermometerResult:
    torch.manual_seed(cfg.seed)
    t_u, t_c, val_u, val_c = _split(cfg)
    model = ThermometerLinear(input_scale=cfg.input_scale)
    params = [model.w, model.b]
    optimizer: torch.optim.Optimizer | None = None
    if cfg.method == "sgd":
        optimizer = torch.optim.SGD(params, lr=cfg.learning_rate)
    elif cfg.method == "adam":
        optimizer = torch.optim.Adam(params, lr=cfg.learning_rate)
    elif cfg.method not in ("manual", "autograd"):
        raise ValueError(f"unknown method {cfg.method!r}: use manual, autograd, sgd or adam")

    history: list[tuple[int, float, float | None]] = []
    loss_value = float("nan")
    from tqdm import tqdm  # the train extra: torchship's core imports without it

    for epoch in tqdm(range(1, cfg.epochs + 1), desc="thermometer-linear", disable=not progress, unit="epoch"):
        if cfg.method == "manual":
            with torch.no_grad():
                t_un = t_u * model.input_scale
                t_p = model.w * t_un + model.b
                loss = _mse(t_p, t_c)
                dloss_dtp = 2 * (t_p - t_c) / t_p.numel()  # the book's grad_fn, chain rule by hand
                model.w -= cfg.learning_rate * (dloss_dtp * t_un).sum()
                model.b -= cfg.learning_rate * dloss_dtp.sum()
        else:
            loss = _mse(model(t_u), t_c)
            if optimizer is None:
                for p in params:
                    p.grad = None
                loss.backward()
                with torch.no_grad():
                    for p in params:
                        p -= cfg.learning_rate * p.grad
            else:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        loss_value = loss.detach().item()
        _check_finite(loss_value, epoch, cfg)
        val_value = None
        if val_u is not None:
            with torch.no_grad():
                val_value = float(_mse(model(val_u), val_c))
        if epoch == 1 or epoch % 500 == 0 or epoch == cfg.epochs:
            history.append((epoch, loss_value, val_value))
    _check_finite(model.w.detach().item(), cfg.epochs, cfg)
    # The loss printed at the last epoch is computed before its update; report the final model's loss.
    with torch.no_grad():
        final = float(_mse(model(t_u), t_c))
        final_val = float(_mse(model(val_u), val_c)) if val_u is not None else None
    return ThermometerResult(_frozen(model), final, final_val, history)


def train_mlp(cfg: ThermometerConfig, progress: bool = True) -> ThermometerResult:
    torch.manual_seed(cfg.seed)
    t_u, t_c, val_u, val_c = _split(cfg)
    model = ThermometerMLP(hidden=cfg.hidden, input_scale=cfg.input_scale)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate)
    history: list[tuple[int, float, float | None]] = []
    from tqdm import tqdm  # the train extra: torchship's core imports without it

    for epoch in tqdm(range(1, cfg.epochs + 1), desc="thermometer-mlp", disable=not progress, unit="epoch"):
        loss = _mse(model(t_u), t_c)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        _check_finite(loss.detach().item(), epoch, cfg)
        val_value = None
        if val_u is not None:
            with torch.no_grad():
                val_value = float(_mse(model(val_u), val_c))
        history.append((epoch, loss.detach().item(), val_value))
    with torch.no_grad():
        final = float(_mse(model(t_u), t_c))
        final_val = float(_mse(model(val_u), val_c)) if val_u is not None else None
    return ThermometerResult(_frozen(model), final, final_val, history)


def save_result(result: ThermometerResult, model_name: str, cfg: ThermometerConfig, out: str | Path) -> Path:
    model_args = {"input_scale": cfg.input_scale}
    if model_name == "thermometer_mlp":
        model_args["hidden"] = cfg.hidden
    metrics = {"train_loss": result.train_loss}
    if result.val_loss is not None:
        metrics["val_loss"] = result.val_loss
    ckpt = make_checkpoint(model_name, result.model, model_args, metrics=metrics, training=asdict(cfg))
    return save_checkpoint(out, ckpt)


def plot_loss(result: ThermometerResult, path: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h[0] for h in result.history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h[1] for h in result.history], label="train")
    if result.history and result.history[0][2] is not None:
        ax.plot(epochs, [h[2] for h in result.history], label="validation")
    ax.set(xlabel="epoch", ylabel="MSE loss", yscale="log", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
