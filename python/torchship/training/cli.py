"""``torchship train <recipe>``: one subcommand per book training procedure."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from torchship.training import luna_cli, thermometer
from torchship.training.classifier import ClassifierConfig, train_classifier
from torchship.training.distributed import DEVICES
from torchship.training.recipes import Dataset, ImageRecipe, get_dataset, image_recipes


def _common_options(
    p: argparse.ArgumentParser,
    *,
    epochs: int,
    learning_rate: float,
    seed: int,
    seed_help: str,
    out: Path,
    out_help: str,
) -> None:
    """The options every recipe has: length, step size, seed, checkpoint path, progress bar."""
    p.add_argument("--epochs", type=int, default=epochs, help="training epochs (default %(default)s)")
    p.add_argument(
        "--learning-rate", "--lr", type=float, default=learning_rate, help="optimizer step size (default %(default)s)"
    )
    p.add_argument("--seed", type=int, default=seed, help=f"{seed_help} (default %(default)s)")
    p.add_argument("--out", type=Path, default=out, help=f"{out_help} (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _thermometer(
    sub: argparse._SubParsersAction, name: str, model: str, defaults: thermometer.ThermometerConfig
) -> None:
    p = sub.add_parser(name, help=f"train {model} (book chapter {'5' if model.endswith('linear') else '6'})")
    _common_options(
        p,
        epochs=defaults.epochs,
        learning_rate=defaults.learning_rate,
        seed=defaults.seed,
        seed_help="seed for the split and init",
        out=Path(f"checkpoints/{model}.ckpt"),
        out_help="checkpoint path",
    )
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


def _model_arg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as JSON when it parses (``32``, ``true``), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. n_blocks=100), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _image(sub: argparse._SubParsersAction, recipe: ImageRecipe) -> None:
    dataset = get_dataset(recipe.dataset)
    p = sub.add_parser(
        recipe.name,
        help=f"train {recipe.model} ({dataset.summary})",
        description=f"{recipe.summary}. Checkpoint after every epoch; TensorBoard scalars under --tb-dir. "
        "Runs on several processes with `torchrun --nproc_per_node N -m torchship.cli train "
        f"{recipe.name} ...` (DistributedDataParallel: gloo on CPU, NCCL on CUDA).",
    )
    try:
        _image_options(p, recipe, dataset)
    except argparse.ArgumentError as e:  # a data set of another package named an option like one of ours
        raise ValueError(f"data set {dataset.name!r} declares an option the recipes already have: {e}") from e
    p.set_defaults(func=lambda a: _run_image(a, recipe))


def _image_options(p: argparse.ArgumentParser, recipe: ImageRecipe, dataset: Dataset) -> None:
    for option in dataset.options:  # the data set's own options, passed to its loader by keyword
        flag = "--" + option.name.replace("_", "-")
        p.add_argument(flag, type=option.type, default=option.default, help=option.help)
    _common_options(
        p,
        epochs=recipe.epochs,
        learning_rate=recipe.learning_rate,
        seed=0,
        seed_help="seed of the initial weights and the batch order",
        out=Path(f"checkpoints/{recipe.model}.ckpt"),
        out_help="checkpoint path, rewritten after every epoch",
    )
    p.add_argument("--batch-size", type=int, default=recipe.batch_size, help="per process (default %(default)s)")
    p.add_argument("--momentum", type=float, default=recipe.momentum, help="SGD momentum (default %(default)s)")
    p.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        help="L2 penalty; the book's l2_lambda equals weight_decay / 2 (default %(default)s)",
    )
    p.add_argument(
        "--optimizer",
        choices=["sgd", "adam"],
        default="sgd",
        help="the book trains these with SGD (default %(default)s)",
    )
    p.add_argument(
        "--model-arg",
        type=_model_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="constructor argument of the model, repeatable (e.g. n_blocks=100, share_weights=true)",
    )
    p.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="auto takes CUDA when visible; under torchrun each process uses its LOCAL_RANK GPU (default %(default)s)",
    )
    p.add_argument(
        "--weights",
        type=Path,
        help="start from these weights: a plain state_dict (torchvision, the book's birds_vs_airplanes.pt), "
        "the book's {'model_state': ...} dict or a torchship checkpoint",
    )
    p.add_argument(
        "--partial-weights",
        action="store_true",
        help="with --weights: load the tensors that fit and keep the rest as initialised (e.g. another head size)",
    )
    p.add_argument(
        "--resume",
        type=Path,
        help="continue the run saved in this checkpoint (weights, optimizer state, epoch) up to --epochs",
    )
    p.add_argument(
        "--tb-dir",
        default="runs",
        help="TensorBoard log root; runs go to <tb-dir>/<recipe>/<time>-{trn,val}_cls[-comment]; '' disables "
        "(default %(default)s)",
    )
    p.add_argument("--comment", default="", help="suffix of the TensorBoard run folders")


def _run_image(args: argparse.Namespace, recipe: ImageRecipe) -> int:
    data = recipe.load_data(**{o.name: getattr(args, o.name) for o in get_dataset(recipe.dataset).options})
    cfg = ClassifierConfig(
        model=recipe.model,
        model_args=dict(args.model_arg),
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        seed=args.seed,
        device=args.device,
        weights=str(args.weights) if args.weights else None,
        partial_weights=args.partial_weights,
        resume=str(args.resume) if args.resume else None,
        tensorboard_dir=args.tb_dir or None,
        run_name=recipe.name,
        comment=args.comment,
    )
    result = train_classifier(cfg, data, out=args.out, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        shown = {k: "n/a" if v is None else f"{v:.4f}" for k, v in result.metrics.items()}
        print(
            f"{recipe.name}: {result.epochs_done} epochs in {result.seconds:.1f} s; "
            f"train accuracy {shown['train_accuracy']}, val accuracy {shown['val_accuracy']}, "
            f"precision {shown['val_precision']}, recall {shown['val_recall']}, F1 {shown['val_f1']}"
        )
        print(f"checkpoint: {result.checkpoint}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model of the book and write a checkpoint",
        description="Train a model of the book with its procedure and write a torchship checkpoint "
        "(the input of `torchship export`). `torchship train RECIPE --help` lists each recipe's options. "
        "Every registered model whose weights declare a registered data set has a recipe "
        "<dataset>-<architecture>, those of installed packages too (entry points torchship.models and "
        "torchship.recipes, or `torchship --import MODULE train ...`).",
    )
    recipes = p.add_subparsers(dest="recipe", required=True, metavar="RECIPE")
    _thermometer(recipes, "thermometer-linear", "thermometer_linear", thermometer.ThermometerConfig())
    _thermometer(
        recipes, "thermometer-mlp", "thermometer_mlp", thermometer.ThermometerConfig(learning_rate=1e-3, method="sgd")
    )
    for recipe in image_recipes():
        _image(recipes, recipe)
    luna_cli.register(recipes)  # part 2: luna-classifier, luna-segmentation
