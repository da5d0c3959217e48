# Two entry points: `make demo` (the whole pipeline) and `make test` (the test suite).
# Both create .venv on first use; nothing else needs to be installed beside Python >= 3.10.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test install lint clean

demo: $(VENV)/.installed
	$(BIN)/hwnas demo

# one test process per core (pytest-xdist): each test runs on one thread
test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -n auto

lint: $(VENV)/.installed
	$(BIN)/ruff check hwnas tests tools

install: $(VENV)/.installed

# torch first, pinned: `pip install torch==2.13.0` takes the CPU build (no multi-GB CUDA download)
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[tvm,test]'
	touch $@

clean:
	rm -rf $(VENV) hwnas-demo .pytest_cache
