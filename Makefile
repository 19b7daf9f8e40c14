# Two commands do all the set-up on a fresh machine with Python >= 3.10:
#   make demo   # a ridge run that groks, checked against the theory (W&B offline, CPU)
#   make test   # the whole suite
# Another torch build (CUDA, say), without editing files:
#   make install TORCH="torch==2.5.1" TORCH_INDEX=https://download.pytorch.org/whl/cu124
SHELL := /bin/bash
# cache bytecode in the venv: test subprocesses would otherwise recompile torch and Lightning each time
unexport PYTHONDONTWRITEBYTECODE
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(subst /,_,$(subst =,_,$(TORCH)))

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install --python $(BIN)/python -q -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: install
	$(BIN)/lightning-grok fit configs/ridge.yaml wandb.mode=offline trainer.accelerator=cpu

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf runs sweep_runs figures .pytest_cache
