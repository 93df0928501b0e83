"""torchship.client against a scripted server (httpx.MockTransport): only overload refusals (503 with
Retry-After) are resent, as many times as asked, waiting as long as the server says; request bodies keep
the wire format byte for byte, and every datatype comes back as it was sent; images go to the image route
byte for byte, and each of its three answers comes back in its own field."""

from __future__ import annotations

import itertools
import json
import math
import struct
import time
import tracemalloc
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from torchship.client import Client, ServerError, datatype_of, dtype_of, image_media_type
from torchship.tensors import DTYPES

OK_BODY = {
    "model_name": "m",
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 1], "data": [2.5]}],
}


def scripted(statuses: list[tuple[int, dict[str, str]]]) -> tuple[httpx.MockTransport, list[float]]:
    """Answers infer calls with the given (status, headers) in turn, then 200; records when each call came."""
    calls: list[float] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) <= len(statuses):
            status, headers = statuses[len(calls) - 1]
            return httpx.Response(status, headers=headers, json={"error": "queue full"})
        return httpx.Response(200, json=OK_BODY)

    return httpx.MockTransport(handle), calls


def infer(client: Client) -> torch.Tensor:
    return client.infer("m", {"x": torch.ones(1, 1)})["y"]


def test_overload_refusals_are_resent_after_the_servers_wait() -> None:
    transport, calls = scripted([(503, {"Retry-After": "0.05"}), (503, {"Retry-After": "0.05"})])
    with Client(transport=transport, overload_retries=2) as client:
        assert infer(client).tolist() == [[2.5]]
    assert len(calls) == 3
    assert min(b - a for a, b in itertools.pairwise(calls)) >= 0.045


def test_retries_run_out_with_the_servers_error() -> None:
    transport, calls = scripted([(503, {"Retry-After": "0"})] * 3)
    with Client(transport=transport, overload_retries=1) as client, pytest.raises(ServerError) as err:
        infer(client)
    assert len(calls) == 2
    assert err.value.status == 503 and err.value.retry_after == 0.0 and err.value.message == "queue full"


@pytest.mark.parametrize("status, headers", [(503, {}), (400, {"Retry-After": "0"}), (500, {})])
def test_other_errors_are_not_resent(status: int, headers: dict[str, str]) -> None:
    transport, calls = scripted([(status, headers)])
    with Client(transport=transport, overload_retries=3) as client, pytest.raises(ServerError):
        infer(client)
    assert len(calls) == 1


def test_the_wait_is_capped() -> None:
    transport, calls = scripted([(503, {"Retry-After": "3600"})])
    with Client(transport=transport, overload_retries=1, max_retry_wait=0.01) as client:
        infer(client)
    assert calls[1] - calls[0] < 1.0


def test_default_client_does_not_retry() -> None:
    transport, calls = scripted([(503, {"Retry-After": "0"})])
    with Client(transport=transport) as client, pytest.raises(ServerError):
        infer(client)
    assert len(calls) == 1
    with pytest.raises(ValueError, match=">= 0"):
        Client(overload_retries=-1)


def test_request_body_is_resent_unchanged() -> None:
    bodies: list[bytes] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        if len(bodies) == 1:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"error": "queue full"})
        return httpx.Response(200, json=OK_BODY)

    with Client(transport=httpx.MockTransport(handle), overload_retries=1) as client:
        infer(client)
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    assert json.loads(bodies[0])["inputs"][0]["data"] == [1.0]


def capture(body: dict[str, object] = OK_BODY) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """Answers every call with ``body``; records the requests."""
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handle), requests


def test_binary_request_body_is_byte_exact_for_mixed_dtypes() -> None:
    inputs = {
        "a": torch.tensor([[1.5, 0.25], [-2.0, math.inf]], requires_grad=True).T,  # strided, needs grad
        "b": np.arange(6, dtype=np.int64).reshape(2, 3)[:, ::2],  # strided numpy
        "c": torch.tensor([1.0, -0.5, 3.0], dtype=torch.bfloat16),
        "d": torch.tensor([True, False, True]),
        "e": np.array([1, 65535], dtype=np.uint16),
        "f": torch.tensor([-1, 127], dtype=torch.int8),
        "g": torch.tensor(0.5, dtype=torch.float16),  # 0-d
        "h": torch.empty(0, 3, dtype=torch.float64),  # empty: no bytes
        "i": torch.tensor([[-3, 300]], dtype=torch.int16),
        "j": torch.tensor([7], dtype=torch.int32),
        "k": np.array([255, 0], dtype=np.uint8),
    }
    transport, requests = capture()
    with Client(transport=transport) as client:
        client.infer("m", inputs, binary_inputs=True, outputs=["y"], request_id="r1")

    # The wire format, written out by hand: compact JSON header, then each tensor's little-endian bytes in order.
    header = (
        b'{"inputs":['
        b'{"name":"a","shape":[2,2],"datatype":"FP32","parameters":{"binary_data_size":16}},'
        b'{"name":"b","shape":[2,2],"datatype":"INT64","parameters":{"binary_data_size":32}},'
        b'{"name":"c","shape":[3],"datatype":"BF16","parameters":{"binary_data_size":6}},'
        b'{"name":"d","shape":[3],"datatype":"BOOL","parameters":{"binary_data_size":3}},'
        b'{"name":"e","shape":[2],"datatype":"UINT16","parameters":{"binary_data_size":4}},'
        b'{"name":"f","shape":[2],"datatype":"INT8","parameters":{"binary_data_size":2}},'
        b'{"name":"g","shape":[],"datatype":"FP16","parameters":{"binary_data_size":2}},'
        b'{"name":"h","shape":[0,3],"datatype":"FP64","parameters":{"binary_data_size":0}},'
        b'{"name":"i","shape":[1,2],"datatype":"INT16","parameters":{"binary_data_size":4}},'
        b'{"name":"j","shape":[1],"datatype":"INT32","parameters":{"binary_data_size":4}},'
        b'{"name":"k","shape":[2],"datatype":"UINT8","parameters":{"binary_data_size":2}}'
        b'],"id":"r1","outputs":[{"name":"y","parameters":{"binary_data":false}}]}'
    )
    header += b" " * (-len(header) % 64)  # padded so the first tensor lands aligned (the server reads it in place)
    bf16 = b"".join(struct.pack("<f", v)[2:] for v in (1.0, -0.5, 3.0))  # bf16 = the high half of the fp32 bits
    payload = (
        struct.pack("<4f", 1.5, -2.0, 0.25, math.inf)
        + struct.pack("<4q", 0, 2, 3, 5)
        + bf16
        + b"\x01\x00\x01"
        + struct.pack("<2H", 1, 65535)
        + struct.pack("<2b", -1, 127)
        + struct.pack("<e", 0.5)
        + struct.pack("<2h", -3, 300)
        + struct.pack("<i", 7)
        + b"\xff\x00"
    )
    (request,) = requests
    assert request.headers["Content-Type"] == "application/octet-stream"
    assert request.headers["Inference-Header-Content-Length"] == str(len(header))
    assert request.content == header + payload


@pytest.mark.parametrize("datatype", sorted(DTYPES))
@pytest.mark.parametrize("binary", [False, True])
def test_every_datatype_round_trips_through_an_echo_server(datatype: str, binary: bool) -> None:
    # -1 wraps to the top of the unsigned types and is True as a bool, as torch converts it.
    sent = torch.tensor([[0, 1, -1], [100, 7, 2]]).to(dtype_of(datatype))
    _echo_round_trip(datatype, sent, binary)


def _echo_round_trip(datatype: str, sent: torch.Tensor, binary: bool) -> None:
    """A server that answers with the request's one input as output "y", encoded the way it came."""

    def handle(request: httpx.Request) -> httpx.Response:
        length = request.headers.get("Inference-Header-Content-Length")
        end = int(length) if length is not None else len(request.content)
        (entry,) = json.loads(request.content[:end])["inputs"]
        header = json.dumps({"outputs": [{**entry, "name": "y"}]}).encode()
        if length is None:
            return httpx.Response(200, content=header)
        return httpx.Response(
            200, headers={"Inference-Header-Content-Length": str(len(header))}, content=header + request.content[end:]
        )

    with Client(transport=httpx.MockTransport(handle)) as client:
        got = client.infer("m", {"x": sent}, binary_inputs=binary)["y"]
    assert got.dtype == sent.dtype and datatype_of(got.dtype) == datatype
    assert torch.equal(got, sent)


def test_binary_payloads_are_copied_once() -> None:
    # Tensor storage is not on the Python heap, so what tracemalloc sees is the body and any copies made for it.
    inputs = {"a": torch.ones(1024, 1024), "b": np.zeros((1024, 1024), dtype=np.float32)}  # 4 MiB each
    payload = 8 * 2**20
    transport, requests = capture()
    with Client(transport=transport) as client:
        tracemalloc.start()
        try:
            client.infer("m", inputs, binary_inputs=True)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert len(requests[0].content) > payload
    assert peak < 1.5 * payload  # one copy into the body; the old tobytes + join + concat peaked near 3x


JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256))  # only the signature matters to the client
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


def test_images_are_sent_as_they_are_to_the_image_route(tmp_path: Path) -> None:
    top = {"model_name": "m", "model_version": "1", "top_k": [{"index": 3, "label": "cat", "probability": 0.75}]}
    transport, requests = capture(top)
    (tmp_path / "photo.jpg").write_bytes(JPEG)
    with Client(transport=transport) as client:
        for source in (JPEG, tmp_path / "photo.jpg", str(tmp_path / "photo.jpg")):
            answer = client.infer_image("m", source, top_k=1)
            assert answer.top_k == top["top_k"] and answer.image is None and answer.outputs is None
        client.infer_image("m", PNG, version=2, accept="image/png, application/json")
    for request in requests[:3]:
        assert request.method == "POST" and request.url.path == "/v2/models/m/image"
        assert request.url.query == b"top_k=1" and request.content == JPEG
        assert request.headers["Content-Type"] == "image/jpeg" and request.headers["Accept"] == "*/*"  # httpx's
    last = requests[-1]
    assert last.url.path == "/v2/models/m/versions/2/image" and last.url.query == b""
    assert last.content == PNG and last.headers["Content-Type"] == "image/png"
    assert last.headers["Accept"] == "image/png, application/json"
    assert image_media_type(b"GIF89a") == "application/octet-stream"  # the server refuses it with a message


def test_image_answers_images_and_tensors() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Accept", "").startswith("image/png"):
            return httpx.Response(200, headers={"Content-Type": "image/png"}, content=PNG)
        return httpx.Response(200, json=OK_BODY)

    with Client(transport=httpx.MockTransport(handle)) as client:
        picture = client.infer_image("gan", JPEG, accept="image/png")
        tensors = client.infer_image("other", JPEG)
    assert picture.content_type == "image/png" and picture.image == PNG and picture.top_k is None
    assert tensors.content_type == "application/json" and tensors.outputs is not None
    assert tensors.outputs["y"].tolist() == [[2.5]]


def test_image_errors_and_overload_refusals() -> None:
    answers = [
        httpx.Response(503, headers={"Retry-After": "0"}, json={"error": "queue full"}),
        httpx.Response(413, json={"error": "image is 20000x20000 (400000000 pixels): over --max-image-pixels"}),
    ]
    bodies: list[bytes] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return answers[len(bodies) - 1]

    with Client(transport=httpx.MockTransport(handle), overload_retries=1) as client, pytest.raises(ServerError) as e:
        client.infer_image("m", PNG)
    assert bodies == [PNG, PNG]  # resent unchanged after the overload refusal
    assert e.value.status == 413 and "--max-image-pixels" in e.value.message
