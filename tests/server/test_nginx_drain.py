"""Run: .venv/bin/python -m pytest tests/server/test_nginx_drain.py -q -s

Scale-out on loopback: two torchship-server replicas behind nginx (Debian's
nginx-light, listening on a unix socket, so no port is fixed). While clients
keep sending inferences through nginx, one replica gets SIGTERM: it finishes
what it holds and exits 0, nginx sends the rest to the other replica, and no
request fails.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
from server_helpers import StartServer, metric

from torchship import tolerance
from torchship.client import Client, ServerError

MODEL = "thermometer_linear"
SUCCESS = f'torchship_inference_success_total{{model="{MODEL}",version="1"}}'
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  upstream torchship {{
    server 127.0.0.1:{a};
    server 127.0.0.1:{b};
    keepalive 16;
  }}
  server {{
    listen unix:{tmp}/nginx.sock;
    location / {{
      proxy_pass http://torchship;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # A replica that refuses or drops a connection (it is draining) or answers
      # 503: try the other one. Inference is a pure function, so a POST may be retried.
      proxy_next_upstream error timeout http_503 non_idempotent;
      proxy_next_upstream_tries 2;
    }}
  }}
}}
"""


@pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed (tools/bootstrap.sh installs nginx-light)")
def test_sigterm_on_one_replica_behind_nginx_loses_no_request(
    start_server: StartServer, thermometer_repository: Path, thermometer_eager: torch.nn.Module, tmp_path: Path
) -> None:
    a = start_server(thermometer_repository, log_level="warning")
    b = start_server(thermometer_repository, log_level="warning")
    (tmp_path / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp_path, a=a.port, b=b.port))
    nginx = subprocess.Popen(
        [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sock = tmp_path / "nginx.sock"
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert time.monotonic() < deadline, (tmp_path / "error.log").read_text()
            try:  # paces the wait and notices an nginx that failed to start
                code = nginx.wait(timeout=0.02)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"nginx exited with {code}: {(tmp_path / 'error.log').read_text()}")

        clients, per_client = 8, 250
        failures: list[str] = []
        done = [0]
        lock = threading.Lock()

        def work(k: int) -> None:
            with Client("http://nginx", transport=httpx.HTTPTransport(uds=str(sock))) as client:
                for i in range(per_client):
                    x = torch.tensor([[1000.0 * k + i]])
                    try:
                        got = client.infer(MODEL, x)["t_c"]
                    except (httpx.HTTPError, ServerError) as e:
                        failures.append(f"client {k} request {i}: {e}")
                        continue
                    with torch.no_grad():
                        if not tolerance.compare(got, thermometer_eager(x), tolerance.tolerance("server")).ok:
                            failures.append(f"client {k} request {i}: wrong answer")
                    with lock:
                        done[0] += 1

        threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        # Once replica A carries real traffic, take it out mid-stream.
        deadline = time.monotonic() + 60
        while metric(a, SUCCESS) < 100:
            assert time.monotonic() < deadline, "no traffic reached replica A"
            threads[0].join(timeout=0.005)
        assert a.proc is not None
        a.proc.send_signal(signal.SIGTERM)
        at_sigterm = done[0]
        for t in threads:
            t.join()
        assert a.proc.wait(timeout=30) == 0, a.log()
        served_by_b = metric(b, SUCCESS)
        total = clients * per_client
        print(f"{total} requests through nginx; SIGTERM to A after {at_sigterm}; B served {served_by_b:.0f}")
        assert not failures, failures[:5]
        assert at_sigterm < clients * per_client, "the load was over before the SIGTERM"
        assert served_by_b > 0
    finally:
        nginx.send_signal(signal.SIGQUIT)  # graceful stop
        nginx.wait(timeout=30)
