#!/usr/bin/env bash
# Build the torchship-server image and prove it works: start it on loopback, wait for readiness, check the
# HEALTHCHECK and the non-root user, send one inference and compare it with PyTorch, stop it with SIGTERM
# and expect exit code 0. Run as root on Debian bookworm, after tools/bootstrap.sh:
#
#   deploy/container.sh            (make container)
#
# Steps: Debian's podman/buildah/debootstrap/runc (installed when missing); a base image made from Debian
# packages (debootstrap, cached as localhost/torchship-debian:bookworm: no registry can be reached here);
# the wheel (`make wheel`); the build context (the wheel + the core's site-packages linked from .venv,
# deploy/core_site.py); `podman build --format docker` (keeps HEALTHCHECK); a model repository with the
# thermometer model; the run check. Each step prints its duration.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=build/container
IMAGE=${TORCHSHIP_IMAGE:-localhost/torchship-server:0.1.0}
BASE_IMAGE=localhost/torchship-debian:bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
NAME=torchship-check-$$
export CONTAINERS_CONF=$PWD/deploy/containers.conf  # ulimits within this machine's hard limits; runc, cgroupfs
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)

say() { printf '\033[1m[container]\033[0m %s\n' "$*"; }
step_began=$SECONDS
step() { say "$1 ($((SECONDS - step_began)) s)"; step_began=$SECONDS; }
fail() { say "FAILED: $*"; exit 1; }

# --- tools --------------------------------------------------------------------
missing=()
for p in podman buildah debootstrap runc; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
mkdir -p "$WORK"
step "tools: podman $(podman --version | cut -d' ' -f3), runc $(runc --version | head -1 | cut -d' ' -f3)"

# --- base image: Debian bookworm from Debian's own packages ------------------------
if ! "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
  rootfs=$WORK/rootfs
  rm -rf "$rootfs" && mkdir -p "$WORK/debs"
  say "debootstrap bookworm (minbase) from $MIRROR"
  debootstrap --variant=minbase --cache-dir="$PWD/$WORK/debs" bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log"; fail "debootstrap (log: $WORK/debootstrap.log)"; }
  # Security and point-release updates too, as on the machine that built the wheel.
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
fi
step "base image $BASE_IMAGE"

# --- the wheel and the build context -----------------------------------------
# TORCHSHIP_WHEEL: a wheel built already (e.g. by `make wheel` for `make test-wheel` in the same CI run).
if [ -n "${TORCHSHIP_WHEEL:-}" ]; then
  wheel=$TORCHSHIP_WHEEL
else
  make --no-print-directory wheel >/dev/null
  wheel=$(ls -t dist/torchship-*.whl | head -n 1)
fi
context=$WORK/context
rm -rf "$context" && mkdir -p "$context"
cp "$wheel" "$context/"
.venv/bin/python deploy/core_site.py "$context/site-packages" --also pip >/dev/null  # pip: to install the wheel
step "wheel $(basename "$wheel") and context ($(du -sh "$context" | cut -f1))"

# --- the image ------------------------------------------------------------------
"${PODMAN[@]}" build --format docker --network host -f deploy/Dockerfile -t "$IMAGE" "$context" \
  >"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log"; fail "podman build (log: $WORK/build.log)"; }
healthcheck=$("${PODMAN[@]}" image inspect --format '{{json .HealthCheck}}' "$IMAGE")
[[ $healthcheck == *"/v2/health/ready"* ]] || fail "the image has no readiness HEALTHCHECK (got: $healthcheck)"
step "image $IMAGE ($("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE" | numfmt --to=iec) bytes)"

# --- a model repository -----------------------------------------------------------
models=$WORK/models
if [ ! -f "$models/thermometer_linear/config.json" ]; then
  rm -rf "$models" "$WORK/checkpoints"
  .venv/bin/torchship train thermometer-linear --no-progress --out "$WORK/checkpoints/thermometer_linear.ckpt" >/dev/null
  .venv/bin/torchship export "$WORK/checkpoints/thermometer_linear.ckpt" --repository "$models" --formats torchscript \
    >/dev/null
fi
step "model repository $models (thermometer_linear, TorchScript)"

# --- run: readiness, health check, user, one inference, SIGTERM ---------------------------
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() { "${PODMAN[@]}" rm -f -t 0 "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT
# (podman's complaint that no systemd runs the periodic health checks goes to run.log; `healthcheck run` below
# runs the check itself.)
"${PODMAN[@]}" run -d --name "$NAME" --network host -e TORCHSHIP_HTTP_PORT="$port" \
  -v "$PWD/$models:/models:ro" "$IMAGE" --host 127.0.0.1 --http-port "$port" --device cpu >/dev/null 2>"$WORK/run.log"
url=http://127.0.0.1:$port
server_log() { "${PODMAN[@]}" logs "$NAME" 2>&1 | grep -v ' access ' | tail -n 20; }
deadline=$((SECONDS + 120))
until curl -fsS -o /dev/null "$url/v2/health/ready" 2>/dev/null; do
  [ "$("${PODMAN[@]}" inspect --format '{{.State.Running}}' "$NAME")" = true ] \
    || { server_log; fail "the server exited before it was ready"; }
  ((SECONDS < deadline)) || { server_log; curl -sS "$url/v2/health/ready"; echo; fail "not ready in 120 s"; }
  sleep 0.5
done
step "ready on $url"

"${PODMAN[@]}" healthcheck run "$NAME" >/dev/null || fail "HEALTHCHECK reports unhealthy while /v2/health/ready is 200"
user=$("${PODMAN[@]}" exec "$NAME" id -u)
[ "$user" = 65532 ] || fail "the server runs as uid $user, not 65532"
pid1=$("${PODMAN[@]}" exec "$NAME" cat /proc/1/comm)
[ "$pid1" = torchship-serve ] || fail "PID 1 is $pid1, not torchship-server (the launcher must exec it)"
step "HEALTHCHECK healthy, uid $user, PID 1 $pid1"

answer=$(curl -fsS "$url/v2/models/thermometer_linear/infer" -H 'Content-Type: application/json' \
  -d '{"inputs": [{"name": "t_u", "shape": [3, 1], "datatype": "FP32", "data": [35.7, 55.9, 81.9]}]}')
ANSWER=$answer MODELS=$models .venv/bin/python -W ignore::FutureWarning - <<'EOF' || fail "the inference differs from PyTorch"
import json, os
import torch
from torchship.tolerance import SAME_ARTIFACT_TOL, assert_close
out = json.loads(os.environ["ANSWER"])["outputs"][0]
x = torch.tensor([[35.7], [55.9], [81.9]])
expected = torch.jit.load(f"{os.environ['MODELS']}/thermometer_linear/1/model.pt")(x)
actual = torch.tensor(out["data"], dtype=torch.float32).reshape(out["shape"])
c = assert_close(actual, expected, SAME_ARTIFACT_TOL, "container vs the artifact in PyTorch")
print(f"[container] inference: {[round(v, 4) for v in actual.flatten().tolist()]} °C, max abs diff {c.max_abs:.1e}")
EOF
step "one inference through the container's server"

"${PODMAN[@]}" stop -t 45 "$NAME" >/dev/null 2>>"$WORK/run.log"
code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$NAME")
[ "$code" = 0 ] || { server_log; fail "exit code $code after SIGTERM"; }
step "SIGTERM: drained, exit code 0"
say "all checks passed; total $SECONDS s"
