"""Run: .venv/bin/python -m pytest tests/server/test_fuzz.py -q -s

Thousands of generated malformed and hostile requests: random mutations of a
valid inference request (bytes flipped, inserted, deleted, truncated; fields
retyped, dropped, resized; binary sizes and header lengths lied about), hostile
paths and methods, and raw HTTP garbage on sockets. Each mutation is invalid by
construction, so every answer must be a 4xx or a 503 -- never another 5xx --
the server must stay up, and a valid request must still succeed afterwards.
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from server_helpers import StartServer

MODEL = "thermometer_linear"
INFER = f"/v2/models/{MODEL}/infer"
BASE: dict[str, Any] = {"inputs": [{"name": "t_u", "shape": [2, 1], "datatype": "FP32", "data": [1.5, 2.5]}]}
BASE_BYTES = json.dumps(BASE, separators=(",", ":")).encode()
# Bytes that never turn a byte-mutated request back into a valid one: no digits, no
# exponent or sign characters, no whitespace (any of those could leave valid JSON).
POISON = b"xyzQ{}[]:,\"\\'\x00\x01\x7f\xff/#"
N_HTTP = 4600
N_RAW = 600

Request = tuple[str, str, bytes | None, dict[str, str]]


def byte_mutation(rng: random.Random) -> Request:
    b = bytearray(BASE_BYTES)
    op = rng.randrange(4)
    if op == 0:  # truncate
        b = b[: rng.randrange(len(b))]
    elif op == 1:  # overwrite one byte with a different one
        i = rng.randrange(len(b))
        b[i] = rng.choice([c for c in POISON if c != b[i]])
    elif op == 2:  # insert one byte
        b.insert(rng.randrange(len(b) + 1), rng.choice(POISON))
    else:  # delete one structural byte or letter (a digit or '.' could leave a valid number)
        candidates = [i for i, c in enumerate(b) if not chr(c).isdigit() and c != ord(".")]
        del b[rng.choice(candidates)]
    return "POST", INFER, bytes(b), {}


WRONG_VALUES: list[Any] = [None, True, 0, -1, 1.5, "x", "", [], {}, [[]], [None], ["a"], {"a": 1}, 2**70, -(2**63)]


def field_mutation(rng: random.Random) -> Request:
    req = json.loads(BASE_BYTES)
    tensor = req["inputs"][0]
    op = rng.randrange(12)
    if op == 0:  # a required field gone
        del tensor[rng.choice(["name", "shape", "datatype", "data"])]
    elif op == 1:  # a required field of the wrong type or value
        key = rng.choice(["name", "shape", "datatype", "data"])
        tensor[key] = rng.choice([v for v in WRONG_VALUES if not (key == "name" and v == "x")])
        if key == "data" and tensor[key] in ([], [[]]):
            tensor["shape"] = [2, 1]  # empty data never fills [2, 1]
    elif op == 2:  # shape that the data does not fill, or the model does not take
        tensor["shape"] = rng.choice(
            [[3, 1], [1, 1], [2], [2, 1, 1], [1, 2], [0, 1], [2, 2], [], [10**12, 10**12], [2**62, 4]]
        )
    elif op == 3:  # data that does not fill the shape
        tensor["data"] = rng.choice([[1.5], [1.5, 2.5, 3.5], [[1.5], [2.5, 3.5]], [[[1.5]], [[2.5]]], [[1.5, 2.5]]])
    elif op == 4:  # datatype the model does not take, or none at all
        tensor["datatype"] = rng.choice(
            ["FP64", "INT64", "INT8", "BOOL", "UINT8", "FP16", "BF16", "BYTES", "fp32", "FP 32", "\u00e9"]
        )
    elif op == 5:  # values no FP32 holds
        tensor["data"] = rng.choice([[1e39, 1.0], [True, False], ["1", "2"], [None, 1.0], [{}, 1.0], [1.0, [2.0]]])
    elif op == 6:  # top level of the wrong type
        req = rng.choice([[], "inputs", 42, None, {"inputs": {}}, {"inputs": [None]}, {"inputs": "t_u"}, {}])
    elif op == 7:  # more inputs than the model has
        req["inputs"].append(dict(tensor, name=rng.choice(["t_u", "t_v", "", "../x"])))
    elif op == 8:  # outputs that do not exist or repeat
        req["outputs"] = rng.choice(
            [[{"name": "nope"}], [{"name": "t_c"}, {"name": "t_c"}], [{}], [1], "t_c", {"name": "t_c"}]
        )
    elif op == 9:  # nesting beyond the depth limit
        depth = rng.randrange(33, 2000)
        return "POST", INFER, b'{"inputs":[],"deep":' + b"[" * depth + b"]" * depth + b"}", {}
    elif op == 10:  # parameters of the wrong type
        target = rng.choice(["request", "input", "output"])
        if target == "request":
            req["parameters"] = rng.choice([{"binary_data_output": "yes"}, {"binary_data_output": 1}, [], "x"])
            req["inputs"][0]["shape"] = [3, 1]  # and the data does not fill the shape
        elif target == "input":
            tensor["parameters"] = rng.choice(
                [{"binary_data_size": -1}, {"binary_data_size": "8"}, {"binary_data_size": 1.5}, []]
            )
        else:
            req["outputs"] = [
                {"name": "t_c", "parameters": rng.choice([{"binary_data": "true"}, {"binary_data": 1}, "x"])}
            ]
    else:  # duplicated keys
        text = json.dumps(req, separators=(",", ":"))
        key = rng.choice(['"name":"t_u"', '"datatype":"FP32"', '"shape":[2,1]'])
        return "POST", INFER, text.replace(key, key + "," + key, 1).encode(), {}
    return "POST", INFER, json.dumps(req).encode(), {}


def binary_mutation(rng: random.Random) -> Request:
    data = b"\x00\x00\xc0?\x00\x00 @"  # 1.5, 2.5 as little-endian FP32
    tensor = {"name": "t_u", "shape": [2, 1], "datatype": "FP32", "parameters": {"binary_data_size": 8}}
    op = rng.randrange(6)
    header_length: str | None = None
    if op == 0:
        tensor["parameters"]["binary_data_size"] = rng.choice([0, 4, 7, 9, 16, 2**40])
    elif op == 1:
        data = data[: rng.randrange(8)]
    elif op == 2:
        data = data + bytes(rng.randrange(1, 16))
    header = json.dumps({"inputs": [tensor]}).encode()
    if op == 3:
        header_length = str(rng.choice([len(header) + rng.randrange(1, 9), len(header) + 10**6, 0, 1]))
    elif op == 4:
        header_length = rng.choice(["-1", "abc", "+12", "1e3", "0x10", "12;", "99999999999999999999999"])
    elif op == 5:  # binary sizes given, header absent: the body is taken for JSON
        header_length = None
        return "POST", INFER, header + data, {}
    return "POST", INFER, header + data, {"Inference-Header-Content-Length": header_length or str(len(header))}


def route_mutation(rng: random.Random) -> Request:
    name = rng.choice(
        ["nope", "..", "%2e%2e", "a/b", "%00", "thermometer_linear%2F..", "x" * 300, "\u00e9", ".hidden", "-", "a b"]
    )
    # ("..": httpx would resolve it away, leaving a valid path)
    version = rng.choice(["0", "2", "x", "-1", "1" * 12, "%2e%2e", "%2e", ""])
    path = rng.choice(
        [
            f"/v2/models/{name}/infer",
            f"/v2/models/{MODEL}/versions/{version}/infer",
            f"/v2/models/{name}",
            f"/v2/models/{name}/ready",
            f"/v2/models/{MODEL}/versions/{version}",
            "/v2/models",
            "/v2/models/",
            "/v1/models/x:predict",
            "/v2/health",
            "/v2/repository/index",
            "/" + "a/" * rng.randrange(1, 50),
            "/%ff%fe",
            "/metrics/x",
        ]
    )
    if version == "" and "/versions/" in path:
        path = path.replace("/versions//", "/versions/x/")
    method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
    if path.endswith("/infer") and name == "nope" and method == "POST":
        return "POST", path, BASE_BYTES, {}
    body = BASE_BYTES if method in ("POST", "PUT", "PATCH") else None
    return method, path, body, {}


RAW: list[bytes] = [
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /v2 HTTP/9.9\r\n\r\n",
    b"GET /v2 FOO/1.1\r\n\r\n",
    b"GET " + b"/a" * 5000 + b" HTTP/1.1\r\n\r\n",
    b"GET /v2 HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
    b"POST " + INFER.encode() + b" HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    b"POST " + INFER.encode() + b" HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"POST " + INFER.encode() + b" HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
    b"POST " + INFER.encode() + b" HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{}]\r\n0\r\n\r\n",
    b"POST " + INFER.encode() + b" HTTP/1.1\r\nContent-Length: 5\r\nContent-Encoding: gzip\r\n\r\nhello",
    b"POST " + INFER.encode() + b" HTTP/1.1\r\nContent-Length: 5\r\nContent-Encoding: zstd\r\n\r\nhello",
    b"POST " + INFER.encode() + b" HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n{}",
    b"POST " + INFER.encode() + b" HTTP/1.1\r\nContent-Length: 2\r\nContent-Type: multipart/form-data\r\n\r\n{}",
    b"POST " + INFER.encode() + b" HTTP/1.1\r\nContent-Length: 20000000\r\n\r\n{}",
    b"BREW /v2 HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64) + b"\r\n\r\n",  # a TLS ClientHello
]


def raw_exchange(port: int, payload: bytes) -> int | None:
    """Sends bytes on a fresh connection; the status of the final (non-1xx) response, None if closed unanswered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        data = b""
        while True:
            for m in re.finditer(rb"HTTP/1\.[01] (\d{3}) [^\r]*\r\n(?:[^\r]+\r\n)*\r\n", data):
                if not m.group(1).startswith(b"1"):
                    return int(m.group(1))
            chunk = s.recv(65536)
            if not chunk:
                return None
            data += chunk


def test_malformed_and_hostile_requests_never_get_a_5xx(
    start_server: StartServer, thermometer_repository: Path
) -> None:
    # Header limit below the 20 KB header line of RAW, so that case meets the limit (431), not a 200.
    server = start_server(
        thermometer_repository, "--max-body-bytes", "65536", "--max-header-bytes", "8192", log_level="warning"
    )
    generators: list[Callable[[random.Random], Request]] = [
        byte_mutation,
        field_mutation,
        binary_mutation,
        route_mutation,
    ]
    weights = [4, 4, 2, 2]
    statuses: Counter[int] = Counter()
    bad: list[str] = []
    lock = threading.Lock()

    def fuzz(seed: int, count: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for _ in range(count):
                method, path, body, headers = rng.choices(generators, weights)[0](rng)
                status = http.request(method, path, content=body, headers=headers).status_code
                with lock:
                    statuses[status] += 1
                    if not (400 <= status < 500 or status == 503):
                        bad.append(f"{status} for {method} {path} {headers} {body!r:.300}")

    workers = [threading.Thread(target=fuzz, args=(seed, N_HTTP // 4)) for seed in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()

    unanswered = 0
    for i in range(N_RAW):
        payload = RAW[i % len(RAW)]
        status = raw_exchange(server.port, payload)
        if status is None:
            unanswered += 1  # a broken HTTP frame may be closed without an answer; never a 5xx
            continue
        statuses[status] += 1
        if not (400 <= status < 500 or status == 503):
            bad.append(f"{status} for raw {payload!r:.200}")

    total = sum(statuses.values()) + unanswered
    print(f"{total} requests: statuses {dict(sorted(statuses.items()))}, {unanswered} raw closed unanswered")
    assert total == 4 * (N_HTTP // 4) + N_RAW  # every request was sent and accounted for
    assert not bad, bad[:10]
    assert server.proc is not None and server.proc.poll() is None, "the server died"
    with httpx.Client(base_url=server.url) as http:
        ok = http.post(INFER, content=BASE_BYTES)
        assert ok.status_code == 200, ok.text
        metrics = http.get("/metrics").text
    assert 'code="500"' not in metrics
    assert server.stop() == 0
