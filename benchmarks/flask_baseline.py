"""The baseline most users start from: a Flask app serving a TorchScript file, as
chapter 15 of the book does (load once, ``torch.no_grad``, one request at a
time through the model on Flask's threaded server). It speaks the same Open
Inference Protocol infer route (JSON and binary) as torchship-server, so the
load generator sends both servers identical requests.

    python benchmarks/flask_baseline.py MODEL_DIR/1/model.pt --name NAME --port 8001
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from flask import Flask, Response, request

_DTYPES = {"FP32": np.float32, "INT64": np.int64}


def create_app(model_path: str, name: str) -> Flask:
    app = Flask(__name__)
    model = torch.jit.load(model_path, map_location="cpu").eval()

    @app.post(f"/v2/models/{name}/infer")
    def infer() -> Response:
        raw = request.get_data()
        header_len = request.headers.get("Inference-Header-Content-Length")
        header = json.loads(raw[: int(header_len)] if header_len else raw)
        offset = int(header_len) if header_len else 0
        inputs = []
        for spec in header["inputs"]:
            dtype = _DTYPES[spec["datatype"]]
            size = (spec.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                arr = np.frombuffer(raw, dtype=dtype, count=size // np.dtype(dtype).itemsize, offset=offset)
                offset += size
            else:
                arr = np.asarray(spec["data"], dtype=dtype)
            inputs.append(torch.from_numpy(arr.reshape(spec["shape"]).copy()))
        with torch.no_grad():
            out = model(*inputs)
        outs = out if isinstance(out, tuple) else (out,)
        binary = bool((header.get("parameters") or {}).get("binary_data_output"))
        results, blobs = [], []
        for i, t in enumerate(outs):
            entry = {"name": f"output_{i}", "datatype": "FP32", "shape": list(t.shape)}
            if binary:
                blob = t.contiguous().numpy().tobytes()
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                entry["data"] = t.flatten().tolist()
            results.append(entry)
        body = json.dumps({"model_name": name, "outputs": results}).encode()
        if not binary:
            return Response(body, mimetype="application/json")
        resp = Response(body + b"".join(blobs), mimetype="application/octet-stream")
        resp.headers["Inference-Header-Content-Length"] = str(len(body))
        return resp

    @app.get("/v2/health/ready")
    def ready() -> Response:
        return Response(status=200)

    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model_path")
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, default=8001)
    args = p.parse_args()
    app = create_app(args.model_path, args.name)
    print(f"flask baseline listening on 127.0.0.1:{args.port}", flush=True)
    app.run(host="127.0.0.1", port=args.port, threaded=True)


if __name__ == "__main__":
    main()
