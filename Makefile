# The two commands of the README. Both build .venv on first use (Python 3.11 + make are all a fresh machine needs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: demo test lint test-slow clean-demo

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) demo.py --out $(DEMO_OUT)

test: $(STAMP) lint
	$(PY) -m pytest -n 2 -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

clean-demo:
	rm -rf $(DEMO_OUT)
