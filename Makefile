# jaxscape: `make demo` and `make test` are the two commands a newcomer needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= runs/demo

.PHONY: demo test test-slow lint format bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,data,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m jaxscape report --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses=4 --dist loadgroup -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_hvp.py --out benchmarks/results
	$(BIN)/python benchmarks/bench_train.py --out benchmarks/results
	$(BIN)/python benchmarks/bench_landscape.py --out benchmarks/results
	$(BIN)/python benchmarks/bench_distributed.py --out benchmarks/results
	$(BIN)/python benchmarks/bench_memory.py --out benchmarks/results
	$(BIN)/python benchmarks/bench_throughput.py --out benchmarks/results

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
