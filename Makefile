# Every target sets itself up first (scripts/bootstrap.sh is idempotent and fast when done).
PY := .venv/bin/python

.PHONY: setup demo test bench bench-text bench-images bench-cache bench-scaling bench-threads

setup:
	@bash scripts/bootstrap.sh

demo: setup
	@HF_HUB_OFFLINE=1 $(PY) examples/sst2_learning_curve.py
	@echo
	@$(PY) examples/hymenoptera_transfer.py

test: setup
	@$(PY) -m pytest

# Every benchmark, then docs/benchmarks.md and its charts are rewritten (about 30 min on 2 cores).
bench: setup
	@HF_HUB_OFFLINE=1 $(PY) benchmarks/run_all.py

bench-images: setup
	@HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_images.py

bench-cache: setup
	@HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_cache.py

bench-text: setup
	@HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_text.py

bench-scaling: setup
	@HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_scaling.py

bench-threads: setup
	@HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_threads.py
