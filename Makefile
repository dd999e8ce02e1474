# One entry point for developers and CI.
.PHONY: check lint format test

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
