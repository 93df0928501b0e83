"""A small Open Inference Protocol (KServe v2) client over httpx, returning torch tensors.

    from torchship.client import Client

    with Client("http://127.0.0.1:8000") as client:
        out = client.infer("thermometer_linear", {"t_u": torch.tensor([[80.0]])})
        print(out["t_c"])

Tensors travel as JSON by default, or with the binary tensor data extension
(``binary_inputs=True`` / ``binary_outputs=True``: raw little-endian bytes after
the JSON header, exact for every dtype including NaN and infinity). A non-2xx
answer raises ``ServerError`` carrying the status and the server's error text.

Images go to the server's image route as they are (JPEG or PNG bytes; the server runs the model's own
preprocessing graph, docs/images.md):

        answer = client.infer_image("resnet18", Path("photo.jpg").read_bytes(), top_k=3)
        print(answer.top_k)  # [{"index": ..., "label": ..., "probability": ...}, ...]
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import torch

# datatype_of and dtype_of stay importable from here too (server_cli uses them).
from torchship.tensors import TensorLike, as_tensor, datatype_of, dtype_of

HEADER_LENGTH = "Inference-Header-Content-Length"
HEADER_ALIGNMENT = 64


def padded_header(header: bytes) -> bytes:
    """The JSON header of a binary request, padded with spaces to a multiple of HEADER_ALIGNMENT bytes.

    The server reads binary tensor data in place when it starts at a multiple of its element size and
    copies it otherwise; JSON allows trailing whitespace, so padding makes the first tensor aligned.
    """
    return header + b" " * (-len(header) % HEADER_ALIGNMENT)


class ServerError(RuntimeError):
    """The server answered with an error status; ``message`` is its ``{"error": ...}`` text."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asks a refused client to wait (the Retry-After header), if it says."""
    value = response.headers.get("Retry-After")
    return float(value) if value else None


def _tensor_from_bytes(raw: bytes, datatype: str, shape: list[int]) -> torch.Tensor:
    dtype = dtype_of(datatype)
    if math.prod(shape) == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape)


def _tensor_from_json(data: list[Any], datatype: str, shape: list[int]) -> torch.Tensor:
    dtype = dtype_of(datatype)
    if dtype.is_floating_point:
        data = [math.nan if v is None else v for v in data]  # the server writes non-finite values as null
    return torch.tensor(data, dtype=dtype).reshape(shape)


def image_media_type(data: bytes) -> str:
    """The media type of JPEG or PNG bytes by their signature; anything else as opaque bytes (the server says why)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    return "application/octet-stream"


@dataclass(frozen=True)
class ImageAnswer:
    """The image route's answer; which field is set depends on the model (docs/images.md, Serving).

    ``top_k``: a classifier's classes, most probable first (``{"index", "label", "probability"}``).
    ``image``: an image-to-image model's output, encoded as ``content_type`` says (image/jpeg or image/png).
    ``outputs``: any other model's outputs by name (the v2 infer response), or an image model's when JSON was asked.
    """

    content_type: str
    top_k: list[dict[str, Any]] | None = None
    image: bytes | None = None
    outputs: dict[str, torch.Tensor] | None = None


class Client:
    """Talks to one server. ``url`` like ``http://127.0.0.1:8000``; ``timeout`` in seconds.

    ``transport``: an httpx transport, e.g. ``httpx.HTTPTransport(uds=path)`` for a unix socket.
    ``overload_retries``: how many times ``infer`` resends a request the server refused as overloaded
    (503 with ``Retry-After``), waiting as long as the server asks (at most ``max_retry_wait`` seconds).
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        *,
        overload_retries: int = 0,
        max_retry_wait: float = 5.0,
    ) -> None:
        if overload_retries < 0 or max_retry_wait < 0:
            raise ValueError("overload_retries and max_retry_wait must be >= 0")
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, transport=transport)
        self._metadata: dict[tuple[str, str | None], dict[str, Any]] = {}
        self._overload_retries = overload_retries
        self._max_retry_wait = max_retry_wait

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- health and metadata ---------------------------------------------------------------------------------

    def live(self) -> bool:
        return self._http.get("/v2/health/live").status_code == 200

    def ready(self) -> bool:
        return self._http.get("/v2/health/ready").status_code == 200

    def server_metadata(self) -> dict[str, Any]:
        return self._json(self._http.get("/v2"))

    def model_metadata(self, model: str, version: str | int | None = None) -> dict[str, Any]:
        key = (model, None if version is None else str(version))
        if key not in self._metadata:
            self._metadata[key] = self._json(self._http.get(self._model_path(model, version)))
        return self._metadata[key]

    def model_ready(self, model: str, version: str | int | None = None) -> bool:
        return self._http.get(self._model_path(model, version) + "/ready").status_code == 200

    def metrics(self) -> str:
        response = self._http.get("/metrics")
        self._raise_for_status(response)
        return response.text

    # -- inference -------------------------------------------------------------------------------------------

    def infer(
        self,
        model: str,
        inputs: TensorLike | Mapping[str, TensorLike],
        *,
        version: str | int | None = None,
        outputs: Sequence[str] | None = None,
        binary_inputs: bool = False,
        binary_outputs: bool = False,
        request_id: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Runs ``model`` once; returns its outputs by name.

        ``inputs``: a mapping by input name, or one tensor for a single-input model.
        ``outputs``: names to return (default: all).
        """
        if not isinstance(inputs, Mapping):
            names = [i["name"] for i in self.model_metadata(model, version)["inputs"]]
            if len(names) != 1:
                raise ValueError(f"model {model!r} takes inputs {names}; pass a mapping by name")
            inputs = {names[0]: inputs}
        request: dict[str, Any] = {"inputs": []}
        if request_id is not None:
            request["id"] = request_id
        blobs: list[memoryview] = []
        for name, value in inputs.items():
            # The wire carries host memory in row-major order.
            t = as_tensor(value, name).detach().cpu().contiguous()
            entry: dict[str, Any] = {"name": name, "shape": list(t.shape), "datatype": datatype_of(t.dtype)}
            if binary_inputs:
                # A view of the tensor's own bytes (any dtype, bf16 included); the join below is the only copy.
                raw = memoryview(t.reshape(-1).view(torch.uint8).numpy())
                entry["parameters"] = {"binary_data_size": raw.nbytes}
                blobs.append(raw)
            else:
                entry["data"] = t.flatten().tolist()
            request["inputs"].append(entry)
        if outputs is not None:
            request["outputs"] = [{"name": n, "parameters": {"binary_data": binary_outputs}} for n in outputs]
        elif binary_outputs:
            request["parameters"] = {"binary_data_output": True}

        header = json.dumps(request, separators=(",", ":")).encode()
        headers = {}
        if blobs:
            header = padded_header(header)
            headers[HEADER_LENGTH] = str(len(header))
            headers["Content-Type"] = "application/octet-stream"
            body = b"".join([header, *blobs])  # one copy of each payload, straight into the body
        else:
            headers["Content-Type"] = "application/json"
            body = header
        response = self._post(self._model_path(model, version) + "/infer", body, headers)
        return self.decode_response(response)

    def infer_image(
        self,
        model: str,
        image: bytes | str | Path,
        *,
        version: str | int | None = None,
        top_k: int | None = None,
        accept: str | None = None,
    ) -> ImageAnswer:
        """Sends one JPEG or PNG image, as it is, to the model's image route (``/v2/models/{m}/image``).

        ``image``: the encoded bytes or a path to them; the server decodes them and runs the preprocessing
        graph export wrote beside the model, so nothing is resized or normalised here.
        ``top_k``: how many classes a classifier answers (the server's default: 5).
        ``accept``: the Accept header, e.g. ``"image/png"`` for an image-to-image model's output as PNG
        (the server's default is JPEG); a classifier answers JSON only (406 if ``accept`` excludes it).
        """
        data = Path(image).read_bytes() if isinstance(image, (str, Path)) else bytes(image)
        headers = {"Content-Type": image_media_type(data)}
        if accept is not None:
            headers["Accept"] = accept
        path = self._model_path(model, version) + "/image"
        if top_k is not None:
            path += f"?top_k={int(top_k)}"
        response = self._post(path, data, headers)
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type.startswith("image/"):
            return ImageAnswer(content_type, image=response.content)
        doc = response.json()  # the image route answers JSON without binary tensors
        if "top_k" in doc:
            return ImageAnswer(content_type, top_k=doc["top_k"])
        return ImageAnswer(content_type, outputs=self.decode_response(response))

    @staticmethod
    def decode_response(response: httpx.Response) -> dict[str, torch.Tensor]:
        """Tensors by output name from an infer response, JSON or binary."""
        content = response.content
        json_length = response.headers.get(HEADER_LENGTH)
        header_end = int(json_length) if json_length is not None else len(content)
        doc = json.loads(content[:header_end])
        result: dict[str, torch.Tensor] = {}
        offset = header_end
        for out in doc["outputs"]:
            size = (out.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                result[out["name"]] = _tensor_from_bytes(content[offset : offset + size], out["datatype"], out["shape"])
                offset += size
            else:
                result[out["name"]] = _tensor_from_json(out["data"], out["datatype"], out["shape"])
        return result

    # -- helpers ---------------------------------------------------------------------------------------------

    @staticmethod
    def _model_path(model: str, version: str | int | None) -> str:
        path = f"/v2/models/{model}"
        return path if version is None else f"{path}/versions/{version}"

    def _post(self, path: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """POSTs ``body``, resending it after an overload refusal as configured; raises ServerError on non-2xx."""
        for attempt in range(self._overload_retries + 1):
            response = self._http.post(path, content=body, headers=headers)
            wait = _retry_after(response)
            if response.status_code != 503 or wait is None or attempt == self._overload_retries:
                break
            time.sleep(min(wait, self._max_retry_wait))
        self._raise_for_status(response)
        return response

    @staticmethod
    def _raise_for_status(response: httpx.Response) -> None:
        if response.is_success:
            return
        try:
            message = str(response.json()["error"])
        except (ValueError, KeyError, TypeError):
            message = response.text or response.reason_phrase
        raise ServerError(response.status_code, message, _retry_after(response))

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        self._raise_for_status(response)
        return response.json()
