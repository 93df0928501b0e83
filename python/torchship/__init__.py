"""torchship: train the models of *Deep Learning with PyTorch*, export them, serve them natively.

The native runtime lives in ``torchship._C`` (built by CMake against the torch
installed beside it); ``torchship.runtime`` is its Pythonic facade.
"""

from __future__ import annotations

__version__ = "0.1.0"


def _check_native_build() -> None:
    """Refuse to load ``_C`` next to a torch other than the one it was compiled against.

    A mismatch otherwise surfaces as an ``undefined symbol`` error deep inside
    the dynamic loader, which tells the user nothing.
    """
    try:
        from torchship import _build_info
    except ImportError:  # not built yet (e.g. during the build itself)
        return
    import torch

    if torch.__version__ != _build_info.TORCH_VERSION:
        raise ImportError(
            f"torchship._C was built against torch {_build_info.TORCH_VERSION} but torch "
            f"{torch.__version__} is installed; rebuild it with `tools/bootstrap.sh` "
            "(or `pip install --no-build-isolation -e .`)."
        )


_check_native_build()
