# One entry point for developers and CI.
.PHONY: check lint format test cpp

check: lint
	python -m mypy mtst runtime export bench experiment

lint:
	python -m ruff check .
	python -m ruff format --check .

format:
	python -m ruff format .
	python -m ruff check --fix .

test:
	python -m pytest

# The C++ runtime: configure (first time), build, ctest. See README "C++".
cpp:
	cmake -S . -B build -G Ninja -DMTST_PYTHON="$$(command -v python)"
	cmake --build build -j2
	ctest --test-dir build --output-on-failure
