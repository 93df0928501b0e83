"""Chapter 5's thermometer readings: Celsius (t_c) and the unknown units (t_u)."""

from __future__ import annotations

import torch

T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]
T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]


def thermometer_data() -> tuple[torch.Tensor, torch.Tensor]:
    """(t_u, t_c) as [11, 1] float32 tensors: batch first, as chapter 6 reshapes them."""
    return torch.tensor(T_U).unsqueeze(1), torch.tensor(T_C).unsqueeze(1)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The book's split: ``n_val = int(val_fraction * n)`` samples from a seeded ``randperm``."""
    n_val = int(val_fraction * n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:], perm[:n_val]
