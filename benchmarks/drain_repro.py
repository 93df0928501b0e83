"""SIGTERM torchship-server while it drains open connections, in a loop, and count the clean exits.

    .venv/bin/python benchmarks/drain_repro.py                 # 10 rounds, torchvision's library loaded
    .venv/bin/python benchmarks/drain_repro.py --no-torchvision --rounds 20
    .venv/bin/python benchmarks/drain_repro.py --trickling 64     # more sessions open at the deadline
    .venv/bin/python benchmarks/drain_repro.py --cores /tmp/cores   # keep core dumps of crashed rounds

Each round starts a server on a one-model repository (a scripted identity), with torchvision's op
library forced in by --extra-library (it brings libpython and libtorch_python along), opens one idle
keep-alive connection and --trickling ones (default 1) that send a header byte every 0.2 s, sends
SIGTERM and waits for the exit: code 0 within --drain-timeout-s + 1 s is a pass. Issue 12 item 5; the
crash of commit d581f4e's notes. Before its fix (a use-after-free in serve/src/http/server.cpp's
shutdown) one trickling connection crashed 9 of 28 rounds, 64 crashed 8 of 8 (7 of 8 with
--no-torchvision); after it, 0 of 30.

With --cores DIR, each round's server runs in DIR/round-N with RLIMIT_CORE raised, so a crash leaves a
core dump there when the kernel's core_pattern is a relative file name (the default `core`); then
`gdb -batch -ex 'thread apply all bt' BINARY DIR/round-N/core` shows where it died. A heap corruption
dies later than its cause: under Valgrind (`--wrap 'valgrind --soname-synonyms=somalloc=*tcmalloc*'`,
which also checks tcmalloc's allocations) the first invalid access is reported where it happens.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import signal
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "server"))
from server_helpers import save_scripted, sigterm_while_draining

from torchship.server_process import ServerProcess


class Identity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def torchvision_ops() -> Path:
    """torchvision's op library beside torch (_C_stable.so in 0.29, _C.so before)."""
    import torchvision

    here = Path(torchvision.__file__).parent
    for name in ("_C_stable.so", "_C.so"):
        if (here / name).is_file():
            return here / name
    raise FileNotFoundError(f"no torchvision op library in {here}")


def identity_repository(root: Path) -> Path:
    repo = root / "repo"
    save_scripted(repo, "identity", Identity(), [("x", "FP32", [4])], [("y", "FP32", [4])])
    return repo


def describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit"
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--drain-timeout-s", type=int, default=1)
    ap.add_argument("--no-torchvision", action="store_true", help="leave torchvision's library out (the control)")
    ap.add_argument("--trickling", type=int, default=1, help="trickling connections (default 1)")
    ap.add_argument("--binary", type=Path, help="another torchship-server (default: the installed package's)")
    ap.add_argument("--wrap", default="", help="a command the server runs under, e.g. 'valgrind -q' (see above)")
    ap.add_argument("--cores", type=Path, help="raise RLIMIT_CORE so crashed servers leave a core dump (see above)")
    args = ap.parse_args()

    if args.cores:
        args.cores = args.cores.resolve()
        args.cores.mkdir(parents=True, exist_ok=True)
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
        print(f"core_pattern: {pattern}")
    flags = ["--device", "cpu", "--drain-timeout-s", str(args.drain_timeout_s), "--header-timeout-ms", "60000"]
    if not args.no_torchvision:
        flags += ["--extra-library", str(torchvision_ops())]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        repo = identity_repository(Path(tmp))
        for i in range(args.rounds):
            if args.cores:  # the server inherits this directory: its core lands here
                (args.cores / f"round-{i + 1}").mkdir(exist_ok=True)
                os.chdir(args.cores / f"round-{i + 1}")
            server = ServerProcess(repo, *flags, log_path=Path(tmp) / f"server{i}.log")
            if args.binary:
                server.cmd[0] = str(args.binary.resolve())
            server.cmd[:0] = shlex.split(args.wrap)
            server.start_timeout_s = 600 if args.wrap else server.start_timeout_s
            server.start()
            code, elapsed = sigterm_while_draining(server, args.trickling, wait_s=args.drain_timeout_s + 60)
            if code is None:
                server.kill()
            else:
                server.stop(timeout_s=1)  # exited already: collects its stdout reader
            ok = code == 0 and elapsed < args.drain_timeout_s + 1
            failures += not ok
            how = describe_exit(code)
            print(
                f"round {i + 1}: {how} after {elapsed:.2f} s (pid {server.pid}){'' if ok else '  FAILED'}", flush=True
            )
            if not ok:
                print("  " + "\n  ".join(server.log().splitlines()[-5:]), flush=True)
    print(
        f"{args.rounds - failures} of {args.rounds} clean exits "
        f"({'without' if args.no_torchvision else 'with'} torchvision's library)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
