"""Where the chapter 14 pipeline's three models run: eager PyTorch, the native runtime, or torchship-server.

The pipeline only needs three calls (segment a batch of slices, classify a batch
of crops as nodule, as malignant); each backend answers them from the models it
holds under the same repository names, so one pipeline serves all three and
their findings can be compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

SEGMENTATION = "luna_segmentation"
NODULE = "luna_classifier"
MALIGNANCY = "luna_malignancy"
MODEL_NAMES = (SEGMENTATION, NODULE, MALIGNANCY)
SEGMENTATION_BATCH = 16  # the registered max_batch_size
CLASSIFIER_BATCH = 32  # 32 crops = 9.4 MB of float32 per request, well under the server's body limit


class PipelineModels(Protocol):
    name: str

    def segment(self, slices: torch.Tensor) -> torch.Tensor:
        """``[N, 8, H, W]`` -> nodule probability ``[N, 1, H, W]``."""

    def classify(self, model: str, chunks: torch.Tensor) -> torch.Tensor:
        """``[N, 1, 32, 48, 48]`` -> positive-class probability ``[N]`` (``model``: NODULE or MALIGNANCY)."""

    def close(self) -> None: ...


class EagerModels:
    """The reference: the trained modules in eval mode, on the CPU."""

    name = "eager"

    def __init__(self, modules: dict[str, torch.nn.Module]) -> None:
        missing = [n for n in MODEL_NAMES if n not in modules]
        if missing:
            raise ValueError(f"eager pipeline lacks {missing}")
        self.modules = {k: m.eval() for k, m in modules.items()}

    @staticmethod
    def from_checkpoints(segmentation: Path, nodule: Path, malignancy: Path) -> EagerModels:
        from torchship.training.checkpoint import build_model, load_checkpoint

        paths = dict(zip(MODEL_NAMES, (segmentation, nodule, malignancy), strict=True))
        return EagerModels({name: build_model(load_checkpoint(path)) for name, path in paths.items()})

    @torch.no_grad()
    def segment(self, slices: torch.Tensor) -> torch.Tensor:
        return self.modules[SEGMENTATION](slices)

    @torch.no_grad()
    def classify(self, model: str, chunks: torch.Tensor) -> torch.Tensor:
        return self.modules[model](chunks)[1][:, 1]

    def close(self) -> None:
        pass


class RuntimeModels:
    """In-process through the C++ runtime (``torchship.runtime.Runtime``) on an exported repository."""

    name = "runtime"

    def __init__(self, repository: Path, device: str = "cpu") -> None:
        from torchship.runtime import Runtime

        self.runtime = Runtime(str(repository), device=device)
        self.models = {n: self.runtime.model(n) for n in MODEL_NAMES}

    def segment(self, slices: torch.Tensor) -> torch.Tensor:
        return self.models[SEGMENTATION].infer(slices)  # type: ignore[return-value]

    def classify(self, model: str, chunks: torch.Tensor) -> torch.Tensor:
        _logits, probabilities = self.models[model].infer(chunks)  # type: ignore[misc]
        return probabilities[:, 1]

    def close(self) -> None:
        self.runtime.close()


class ServerModels:
    """Through torchship-server (KServe v2 over HTTP, binary tensor data both ways)."""

    name = "server"

    def __init__(self, url: str, timeout_s: float = 120.0) -> None:
        from torchship.client import Client

        self.client = Client(url, timeout=timeout_s, overload_retries=3)
        not_ready = [n for n in MODEL_NAMES if not self.client.model_ready(n)]
        if not_ready:
            self.client.close()
            raise RuntimeError(f"torchship-server at {url} has no ready {', '.join(not_ready)}; export them first")

    def segment(self, slices: torch.Tensor) -> torch.Tensor:
        out = self.client.infer(SEGMENTATION, slices, binary_inputs=True, binary_outputs=True)
        return next(iter(out.values()))

    def classify(self, model: str, chunks: torch.Tensor) -> torch.Tensor:
        out = self.client.infer(model, chunks, outputs=["probabilities"], binary_inputs=True, binary_outputs=True)
        return out["probabilities"][:, 1]

    def close(self) -> None:
        self.client.close()
