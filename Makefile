# Every target sets itself up first (scripts/bootstrap.sh is idempotent and fast when done).
PY := .venv/bin/python

.PHONY: setup demo test bench-images

setup:
	@bash scripts/bootstrap.sh

demo: setup
	@HF_HUB_OFFLINE=1 $(PY) examples/sst2_learning_curve.py
	@echo
	@$(PY) examples/hymenoptera_transfer.py

test: setup
	@$(PY) -m pytest

bench-images: setup
	@$(PY) benchmarks/bench_images.py
