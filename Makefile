# Every target sets itself up first (scripts/bootstrap.sh is idempotent and fast when done).
PY := .venv/bin/python

.PHONY: setup demo test

setup:
	@bash scripts/bootstrap.sh

demo: setup
	@HF_HUB_OFFLINE=1 $(PY) examples/sst2_learning_curve.py

test: setup
	@$(PY) -m pytest
