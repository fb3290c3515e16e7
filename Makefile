# whisper-ft developer entry points. `make test` and `make demo` work on a fresh clone:
# they create .venv, install torch first (CPU wheel by default), then the project.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install speech test test-fast demo lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,bundled,demo,serve,llm,scale]"
	touch $(STAMP)

install: $(STAMP)

# The speech engine of `prepare tts`, the demo and the tests: libespeak-ng from the espeakng-loader
# wheel (installed by the extras on Linux x86-64, macOS, Windows). Where there is no wheel, the
# espeak-ng program from apt-get, when this user may install it (root, or sudo without a password).
SPEECH_CHECK := $(BIN)/python -m whisper_ft.data.tts
speech: $(STAMP)
	@$(SPEECH_CHECK) 2>/dev/null || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	    if [ "$$SUDO" != none ]; then \
	      echo "make: no espeakng-loader wheel for this platform: installing espeak-ng with apt-get" >&2; \
	      $$SUDO apt-get install -y -qq espeak-ng >/dev/null 2>&1 || \
	        { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq espeak-ng; } >/dev/null; \
	    fi; \
	  fi; \
	  $(SPEECH_CHECK); \
	}

# A missing engine does not stop the tests here: the speech tests skip, saying why (in CI they fail).
test: $(STAMP)
	-@$(MAKE) --no-print-directory speech
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python -m pytest -q -rs tests

# The unit tier for the edit loop (tiny random models; no real weights, server, browser, Ray or
# slow end-to-end tests): a few minutes on 2 cores. `make test` is the whole suite CI runs.
FAST := not slow and not real and not server and not browser and not ray and not shared_audio
test-fast: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python -m pytest -q -m "$(FAST)" tests

# MALLOC_MMAP_THRESHOLD_: glibc returns freed activation buffers (>4 MB) to the OS, which keeps
# the training step's peak RSS at what was measured (README) instead of the allocator's high-water mark.
demo: $(STAMP) speech
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} MALLOC_MMAP_THRESHOLD_=$${MALLOC_MMAP_THRESHOLD_:-4194304} $(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check whisper_ft tests benchmarks scripts

clean:
	rm -rf $(VENV) .pytest_cache
