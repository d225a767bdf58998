# Every target sets itself up first (scripts/bootstrap.sh is idempotent and fast when done).
PY := .venv/bin/python

# `make docs` builds the documentation site into site/ (warnings are errors).
.PHONY: setup demo test lint check-wheel docs bench bench-text bench-images bench-cache bench-scaling bench-threads bench-cluster bench-finetune bench-backends bench-speed-advice

setup:
	@bash scripts/bootstrap.sh

# The README's main job: the three examples on real data (the same as `sktransfer demo`).
demo: setup
	@HF_HUB_OFFLINE=1 $(PY) -m sktransfer demo

# Two pytest-xdist workers, a test file each at a time (module fixtures and each file's cluster
# start stay in one process): many tests wait on subprocesses, clusters and file I/O, which the
# other worker fills with work. Files go out in collection order, the longest first
# (tests/conftest.py), not pytest-xdist's order by number of tests.
test: setup
	@$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# The linter, with the rule set agreed in pyproject.toml ([tool.ruff]).
lint: setup
	@$(PY) -m ruff check .

# The built wheel installs and imports in a fresh virtual environment (scripts/check_wheel.sh).
check-wheel: setup
	@bash scripts/check_wheel.sh

docs: setup
	@NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet
	@echo "documentation site built in site/ (open site/index.html)"

# Every benchmark, then docs/benchmarks.md and its charts are rewritten (about 50 min on 2 cores:
# the sections' times are recorded at the top of docs/benchmarks.md, and the README says the same).
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

# Fine-tuning cost per epoch: top blocks on cached activations vs the whole network (docs/adapting.md).
bench-finetune: setup
	@HF_HUB_OFFLINE=1 $(PY) benchmarks/run_all.py --only finetune

# torch, ONNX Runtime and OpenVINO (fp32, bf16, int8) under ImageEncoder and TextEncoder, with downstream
# accuracy beside cosine (docs/image_encoder.md#backends, docs/cpu_speed.md).
bench-backends: setup
	@HF_HUB_OFFLINE=1 $(PY) benchmarks/run_all.py --only backends

# The speed advisor on one corpus, its choice applied to another (docs/cpu_speed.md, docs/speed_advice.json).
bench-speed-advice: setup
	@HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_speed_advice.py

# Dask, Ray and Spark local clusters vs the single-process encoder: overhead and start-up (docs/scaling_out.md).
bench-cluster: setup
	@HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_cluster.py
