# Thin targets; each runs the idempotent set-up first (seconds when ready).
.PHONY: setup demo test lint format bench clean

setup:
	tools/bootstrap.sh

demo: setup
	.venv/bin/python tools/demo.py

test: setup
	ctest --test-dir build/native --output-on-failure
	.venv/bin/python -m pytest

lint: setup
	.venv/bin/ruff check python tests export tools benchmarks
	.venv/bin/ruff format --check python tests export tools benchmarks

format: setup
	.venv/bin/ruff format python tests export tools benchmarks
	clang-format -i cpp/*/*.cpp cpp/*/*/*.h cpp/*/*.h 2>/dev/null || true

bench: setup
	.venv/bin/python benchmarks/run.py

clean:
	rm -rf build model_repository checkpoints runs demo_output
