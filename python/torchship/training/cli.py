"""``torchship train <recipe>``."""

from __future__ import annotations

import argparse
from pathlib import Path

from torchship.training import thermometer


def _thermometer(
    sub: argparse._SubParsersAction, name: str, model: str, defaults: thermometer.ThermometerConfig
) -> None:
    p = sub.add_parser(name, help=f"train {model} (book chapter {'5' if model.endswith('linear') else '6'})")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs (default %(default)s)")
    p.add_argument("--learning-rate", "--lr", type=float, default=defaults.learning_rate, help="default %(default)s")
    p.add_argument(
        "--input-scale",
        type=float,
        default=defaults.input_scale,
        help="multiply t_u by this before the model (the book's 0.1; 1.0 = raw input)",
    )
    if model.endswith("linear"):
        p.add_argument(
            "--method",
            choices=["manual", "autograd", "sgd", "adam"],
            default=defaults.method,
            help="manual gradients, autograd, or torch.optim SGD/Adam (default %(default)s)",
        )
    else:
        p.add_argument("--hidden", type=int, default=defaults.hidden, help="hidden units (default %(default)s)")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=defaults.val_fraction,
        help="fraction held out for validation (book: 0.2; default %(default)s trains on all 11 readings)",
    )
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed for the split and init (default %(default)s)")
    p.add_argument(
        "--out", type=Path, default=Path(f"checkpoints/{model}.ckpt"), help="checkpoint path (default %(default)s)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=lambda a: _run_thermometer(a, model))


def _run_thermometer(args: argparse.Namespace, model: str) -> int:
    cfg = thermometer.ThermometerConfig(
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        input_scale=args.input_scale,
        val_fraction=args.val_fraction,
        seed=args.seed,
        method=getattr(args, "method", "sgd"),
        hidden=getattr(args, "hidden", 8),
    )
    train = thermometer.train_linear if model == "thermometer_linear" else thermometer.train_mlp
    result = train(cfg, progress=not args.no_progress)
    path = thermometer.save_result(result, model, cfg, args.out)
    val = f", val loss {result.val_loss:.6f}" if result.val_loss is not None else ""
    print(f"{model}: train loss {result.train_loss:.6f}{val}; params {result.params or '(MLP)'}")
    if model == "thermometer_mlp":
        png = thermometer.plot_loss(result, path.with_suffix(".loss.png"), "thermometer MLP")
        print(f"loss curve: {png}")
    print(f"checkpoint: {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model of the book and write a checkpoint")
    recipes = p.add_subparsers(dest="recipe", required=True, metavar="RECIPE")
    _thermometer(recipes, "thermometer-linear", "thermometer_linear", thermometer.ThermometerConfig())
    _thermometer(
        recipes, "thermometer-mlp", "thermometer_mlp", thermometer.ThermometerConfig(learning_rate=1e-3, method="sgd")
    )
