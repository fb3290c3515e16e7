# whisper-ft developer entry points. `make test` and `make demo` work on a fresh clone:
# they create .venv, install torch first (CPU wheel by default), then the project.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,bundled,demo,serve,llm]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python -m pytest -q -rs tests

# MALLOC_MMAP_THRESHOLD_: glibc returns freed activation buffers (>4 MB) to the OS, which keeps
# the training step's peak RSS at what was measured (README) instead of the allocator's high-water mark.
demo: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} MALLOC_MMAP_THRESHOLD_=$${MALLOC_MMAP_THRESHOLD_:-4194304} $(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check whisper_ft tests benchmarks scripts

clean:
	rm -rf $(VENV) .pytest_cache
