"""``torchship``: one entry point, one subcommand per stage of the data flow.

torchship train <recipe> ...     train a model of the book, write a checkpoint
torchship export <ckpt> ...      write verified artifacts into a model repository
torchship infer ...              run a repository model through the native runtime
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from torchship.extras import missing_extra_message

# Each module adds its subcommand with register(subparsers) and sets `func` on it.
COMMAND_MODULES = (
    "torchship.training.cli",
    "torchship.export.cli",
    "torchship.export.importer",
    "torchship.runtime_cli",
    "torchship.parity",
    "torchship.server_cli",
    "torchship.data.luna.cli",
    "torchship.analysis.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchship", description="Train, export and serve the models of Deep Learning with PyTorch."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (repeatable; the current directory is searched too): the models and data sets it "
        "registers (@torchship.register_model, register_dataset) join this command's. Installed packages' "
        "'torchship.models' / 'torchship.recipes' entry points are loaded without it",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    missing = []  # command modules whose stage library is not installed: the other commands still work
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name).register(sub)
        except ModuleNotFoundError as e:
            if (message := missing_extra_message(e)) is None:
                raise
            missing.append(f"the commands of {name}: {message}")
    if missing:
        parser.epilog = "Not available here: " + "; ".join(missing)
        fail = parser.error  # argparse's own, after naming what to install
        parser.error = lambda text: fail(f"{text}\n{parser.epilog}")  # type: ignore[method-assign]
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line; everything after ``serve`` belongs to torchship-server, untouched.

    (argparse cannot pass through options that start with ``--`` to a subcommand by itself.)
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    i = _command_index(argv)
    import_modules(argv[:i])  # before the parser: train's recipes come from the registry
    parser = build_parser()
    if i < len(argv) and argv[i] == "serve":
        args = parser.parse_args([*argv[:i], "serve"])
        args.server_args = argv[i + 1 :]
        return args
    return parser.parse_args(argv)


def _command_index(argv: list[str]) -> int:
    """Where the subcommand starts: the first word that is neither an option nor the value of ``--import``."""
    k = 0
    while k < len(argv):
        if argv[k] == "--import":
            k += 2
        elif argv[k].startswith("-"):
            k += 1
        else:
            return k
    return len(argv)


def import_modules(global_args: list[str]) -> None:
    """The ``--import MODULE`` / ``--import=MODULE`` options among the global arguments, imported in order."""
    from torchship.models.plugins import import_module

    for k, arg in enumerate(global_args):
        if arg == "--import" and k + 1 < len(global_args):
            import_module(global_args[k + 1])
        elif arg.startswith("--import="):
            import_module(arg.partition("=")[2])


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except (ImportError, ValueError) as e:  # --import, or another package's models or recipes: one clear line
        print(f"torchship: error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    for noisy in ("httpx", "httpcore"):  # one line per HTTP request is not news
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # user-facing: one clear line, not a traceback
        if args.verbose:
            raise
        # A stage's library comes with an extra of the package: name the extra.
        extra = missing_extra_message(e)
        print(f"torchship {args.command}: error: {extra or e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
