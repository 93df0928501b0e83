# Thin targets; each runs the idempotent set-up first (seconds when ready).
.PHONY: setup demo test test-slow test-long lint format bench clean wheel test-wheel container

setup:
	tools/bootstrap.sh

demo: setup
	.venv/bin/python tools/demo.py

test: setup
	ctest --test-dir build/native --output-on-failure
	.venv/bin/python -m pytest -m "not slow"

# The tests marked slow (the torchvision matrix, part 2 end to end, own-model README run, int8 of large
# models, ...): minutes each; CI runs them after `make test`.
test-slow: setup
	.venv/bin/python -m pytest -m "slow and not long" --durations=15

# Tens of minutes on 2 cores (part 2's whole story on a generated set); not in CI.
test-long: setup
	.venv/bin/python -m pytest -m long -s --durations=15

lint: setup
	.venv/bin/ruff check python tests export tools benchmarks
	.venv/bin/ruff format --check python tests export tools benchmarks

format: setup
	.venv/bin/ruff format python tests export tools benchmarks
	clang-format -i cpp/*/*.cpp cpp/*/*/*.h cpp/*/*.h 2>/dev/null || true

bench: setup
	.venv/bin/python benchmarks/run.py --variants exported,bf16-cl,int8

# The linux_x86_64 wheel in dist/, built in build/native (incremental: the set-up built it already).
wheel: setup
	flock build/.bootstrap.lock .venv/bin/python -m pip wheel --no-build-isolation --no-deps -q -w dist .

# Slow (minutes): the wheel installed into fresh venvs, core alone and with each extra.
test-wheel: setup
	.venv/bin/python -m pytest tests/deploy/wheel_install.py -q --durations=5

# Slow (minutes, root): the container image built with podman from a debootstrap'd base, run and checked.
container: setup
	deploy/container.sh

clean:
	rm -rf build dist model_repository checkpoints runs demo_output
