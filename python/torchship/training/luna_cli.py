"""Part 2 recipes of ``torchship train``: ``luna-classifier`` (chapters 11, 12, 14), ``luna-segmentation`` (13)."""

from __future__ import annotations

import argparse


def register(recipes: argparse._SubParsersAction) -> None:
    from torchship.training import luna_classifier

    p = recipes.add_parser(
        "luna-classifier",
        help="train LunaModel on LUNA16 (or synth-luna) candidates (chapters 11, 12, 14)",
        description="The book's LunaTrainingApp: nodule vs non-nodule (or --task malignancy) on 32x48x48 crops, "
        "val_stride split by series, --balanced sampling, 3-D augmentation, per-class metrics and TensorBoard runs.",
    )
    luna_classifier.add_arguments(p)
    p.set_defaults(func=luna_classifier.run)

    from torchship.training import luna_segmentation

    s = recipes.add_parser(
        "luna-segmentation",
        help="train the chapter 13 UNetWrapper on LUNA16 (or synth-luna) slices",
        description="Nodule segmentation: 64x64 crops around nodules, Dice + 8x false-negative Dice, Adam, "
        "per-epoch TP/FN/FP, best model by the book's score, validation images in TensorBoard.",
    )
    luna_segmentation.add_arguments(s)
    s.set_defaults(func=luna_segmentation.run)
