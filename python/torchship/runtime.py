"""Pythonic facade over the native runtime ``torchship._C``.

    from torchship.runtime import Runtime
    with Runtime("model_repository", device="cpu") as rt:
        celsius = rt.model("thermometer_linear").infer(torch.tensor([[80.0]]))
        top5 = rt.model("resnet18").infer_image("photo.jpg")  # [{"index", "label", "probability"}, ...]

Calls release the GIL while the C++ core works, so Python threads run in
parallel. Inputs may be torch tensors or NumPy arrays (contiguous CPU arrays
are passed without a copy).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from torchship import _C
from torchship.tensors import TensorLike, as_tensor

if TYPE_CHECKING:
    from PIL import Image

Error = _C.Error
LoadError = _C.LoadError
InvalidInputError = _C.InvalidInputError
NotFoundError = _C.NotFoundError
OverloadedError = _C.OverloadedError
UnavailableError = _C.UnavailableError
TimeoutError = _C.TimeoutError

_configured = False


def configure(
    *,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    allow_tf32: bool = False,
    cudnn_benchmark: bool = False,
    jit_profiling: bool = True,
) -> None:
    """Process-wide torch settings for the native runtime, applied once at start-up (never per request).

    TF32 is off by default so CUDA fp32 results match CPU fp32 within the parity policy; torch's own
    default leaves it on for cuDNN convolutions. 0 threads keeps torch's default. The first ``Runtime``
    applies these defaults unless ``configure`` was called before.
    """
    global _configured
    _C.apply_process_settings(intra_op_threads, inter_op_threads, allow_tf32, cudnn_benchmark, jit_profiling)
    _configured = True


class Model:
    """One loaded model version. ``infer`` goes through its dynamic batcher."""

    def __init__(self, native: _C.Model, runtime: Runtime | None = None) -> None:
        self._native = native
        self._runtime = runtime  # held: a collected Runtime shuts its models down (`Runtime(r).model(m)`)
        self.config: dict[str, Any] = json.loads(native.config_json)

    name = property(lambda self: self._native.name)
    version = property(lambda self: self._native.version)
    format = property(lambda self: self._native.format)
    precision = property(lambda self: self._native.precision)
    variant = property(lambda self: self._native.variant)  # which artifact runs, and any conversion at load
    device = property(lambda self: self._native.device)
    max_batch_size = property(lambda self: self._native.max_batch_size)
    input_names = property(lambda self: list(self._native.input_names))
    output_names = property(lambda self: list(self._native.output_names))
    labels = property(lambda self: self.config.get("labels"))

    def infer(
        self, inputs: TensorLike | Sequence[TensorLike] | Mapping[str, TensorLike], timeout: float | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Runs the model. Returns a tensor for single-output models, else a tuple in config order.

        ``inputs``: one tensor (single-input models), a sequence in config order, or a mapping by name.
        ``timeout``: seconds a request may wait in the queue before TimeoutError.
        """
        timeout_us = None if timeout is None else int(timeout * 1e6)
        if isinstance(inputs, Mapping):
            named = [(k, as_tensor(v, k)) for k, v in inputs.items()]
            out = self._native.infer_named(named, timeout_us)
        else:
            seq = [inputs] if isinstance(inputs, (torch.Tensor, np.ndarray)) else list(inputs)
            names = self.input_names
            out = self._native.infer(
                [as_tensor(x, names[i] if i < len(names) else str(i)) for i, x in enumerate(seq)], timeout_us
            )
        return out[0] if len(out) == 1 else tuple(out)

    @property
    def takes_images(self) -> bool:
        """Whether export wrote the model's preprocessing graph (config.json's ``image``; docs/images.md)."""
        return bool(self._native.takes_images)

    def infer_image(
        self, image: bytes | str | Path | Image.Image, top_k: int = 5, timeout: float | None = None
    ) -> list[dict[str, Any]] | Image.Image | torch.Tensor | tuple[torch.Tensor, ...]:
        """Runs the model on one image, preprocessed by the graph exported beside it (as the server's image route).

        ``image``: JPEG or PNG bytes, a path to one, or a PIL image (converted to RGB as PIL does). Returns a
        classifier's ``top_k`` classes (``{"index", "label", "probability"}``, most probable first), an
        image-to-image model's output as a PIL image, or any other model's outputs as ``infer`` does.
        """
        if isinstance(image, (str, Path)):
            image = Path(image).read_bytes()
        if isinstance(image, bytes):
            batch = self._native.preprocess_image(image)
        else:
            pixels = torch.from_numpy(np.array(image.convert("RGB"))).contiguous()
            batch = self._native.preprocess_pixels(pixels)
        outputs = self._native.infer([batch], None if timeout is None else int(timeout * 1e6))
        if self._native.classifies:
            output = outputs[self._native.image_output]
            labels = self.labels or []
            return [
                {"index": i, "probability": p, **({"label": labels[i]} if i < len(labels) else {})}
                for i, p in self._native.top_k(output, top_k)[0]
            ]
        if self._native.makes_images:
            from PIL import Image

            pixels = self._native.postprocess_image(outputs[self._native.image_output][0])
            return Image.fromarray(pixels.numpy(), "RGB")
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def stats(self) -> dict[str, Any]:
        return self._native.stats()

    def __repr__(self) -> str:
        return f"Model({self.name!r}, version={self.version}, format={self.format}, device={self.device})"


class Runtime:
    """Loads every model of a repository (or the ones named) onto one device.

    ``format``, ``precision`` ("fp32", "fp16", "bf16", "int8") and ``channels_last`` choose among the
    version's variants (docs/variants.md); a TorchScript fp32 artifact is converted at load to fp16/bf16
    or channels_last when no such variant was exported. Inputs and outputs keep the config's dtypes.
    ``extra_libraries`` are operator libraries (.so) that artifacts call into; torchvision's ops are
    loaded automatically when torchvision is installed beside torch.
    """

    def __init__(
        self,
        repository: str | Path,
        device: str = "cpu",
        format: str = "auto",
        models: Sequence[str] = (),
        *,
        instance_count: int | None = None,
        max_batch_size: int | None = None,
        max_queue_delay_us: int | None = None,
        max_queue_size: int | None = None,
        warmup: bool = True,
        precision: str = "fp32",
        channels_last: bool = False,
        extra_libraries: Sequence[str | Path] = (),
    ) -> None:
        if not _configured:
            configure()
        load_op_libraries(extra_libraries)
        self._repo = _C.Repository(
            str(repository),
            device=device,
            format=format,
            models=list(models),
            instance_count=instance_count,
            max_batch_size=max_batch_size,
            max_queue_delay_us=max_queue_delay_us,
            max_queue_size=max_queue_size,
            warmup=warmup,
            precision=precision,
            channels_last=channels_last,
        )

    def model(self, name: str, version: str | int = "") -> Model:
        return Model(self._repo.model(name, str(version)), self)

    def models(self) -> list[Model]:
        return [Model(m, self) for m in self._repo.models()]

    @property
    def ready(self) -> bool:
        return self._repo.ready()

    def close(self) -> None:
        """Stops accepting requests and finishes those in flight."""
        self._repo.shutdown()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_op_libraries(paths: Sequence[str | Path] = ()) -> None:
    """Loads operator libraries (process-wide, once each), torchvision's first when it is installed."""
    torchvision = _C.find_torchvision_ops()
    if torchvision:
        _C.load_op_library(torchvision)
    for path in paths:
        _C.load_op_library(str(path))


def cuda_available() -> bool:
    return bool(_C.cuda_available())
