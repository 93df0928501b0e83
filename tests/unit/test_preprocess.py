"""Run: .venv/bin/pytest tests/unit/test_preprocess.py

Preprocessing parity: the same image through the book's torchvision pipeline and through the
preprocessing a repository carries (what clients apply before sending) gives the same tensor.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from torchship import models
from torchship.models.cifar import digits_to_images
from torchship.preprocess import image_transform


def _photo(h: int, w: int, seed: int = 0) -> Image.Image:
    """A synthetic RGB 'photo': smooth gradients plus noise, so resizing has work to do."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], axis=-1) * 200
    return Image.fromarray((base + rng.integers(0, 55, (h, w, 3))).astype(np.uint8), "RGB")


def test_imagenet_preprocessing_equals_the_books_pipeline() -> None:
    # The book, chapter 2: Resize(256), CenterCrop(224), ToTensor(), Normalize(ImageNet mean/std).
    book = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    image = _photo(720, 1280)  # bobby.jpg's size
    ours = image_transform(models.get("resnet18").preprocessing)(image)
    expected = book(image)
    assert ours.shape == (3, 224, 224)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def test_cifar_preprocessing_equals_the_books_pipeline() -> None:
    book = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.4915, 0.4823, 0.4468), (0.2470, 0.2435, 0.2616))]
    )
    image = _photo(32, 32, seed=3)
    torch.testing.assert_close(image_transform(models.get("net").preprocessing)(image), book(image), rtol=0, atol=1e-6)


def test_digits_preprocessing_equals_the_training_path() -> None:
    from sklearn.datasets import load_digits

    pixels = torch.from_numpy(load_digits().images[:5]).to(torch.float32)  # 0..16
    trained_on = digits_to_images(pixels)
    transform = image_transform(models.get("digits_net").preprocessing)
    for i in range(5):
        # An 8x8 greyscale image holding the raw 0..16 values, as a client would send it.
        image = Image.fromarray(pixels[i].numpy().astype(np.uint8), "L")
        torch.testing.assert_close(transform(image), trained_on[i], rtol=0, atol=1e-6)


def test_ct_models_refuse_images_with_a_reason() -> None:
    """LunaModel and the U-Net take Hounsfield units; an image must be refused by name, not crash."""
    for name in ("luna_classifier", "luna_segmentation"):
        with pytest.raises(ValueError, match="Hounsfield units"):
            image_transform(models.get(name).preprocessing)


def test_normalization_done_by_the_model_is_not_applied_twice() -> None:
    image = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4))
    plain = image_transform({})(image)
    in_model = image_transform({"normalize": "in_model"})(image)
    assert torch.equal(plain, in_model)
