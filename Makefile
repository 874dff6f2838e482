# Two commands do all the set-up on a fresh machine (README):
#   make smoke   - create .venv, install KODA, train the smoke model on 2 CPU ranks
#                  (again: continues runs/smoke where it stopped; rm -r runs/smoke to start over)
#   make test    - create .venv, install KODA, run the test suite
# TORCH_SPEC picks the torch build; the default takes the CPU wheel on machines that ship
# it (find-links) and is what CI uses. GPU users: see README "Installing on a GPU machine".
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup smoke test lint clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[dev]'
	# K-FAC reference for tests/optim, without backpack (only its experimental module needs it)
	$(BIN)/pip install -q --no-deps curvlinops-for-pytorch==3.0.1
	touch $@

smoke: setup
	$(BIN)/koda train --config smoke --resume

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs cache
