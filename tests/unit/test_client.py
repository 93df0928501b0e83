"""torchship.client's retry policy against a scripted server (httpx.MockTransport): only overload refusals
(503 with Retry-After) are resent, as many times as asked, waiting as long as the server says."""

from __future__ import annotations

import itertools
import json
import time

import httpx
import pytest
import torch

from torchship.client import Client, ServerError

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
