"""Root pytest configuration: every test and doctest runs offline.

The hub clients read these variables at import time, so they are set before anything imports
huggingface_hub or transformers. A test that needs the network is a bug.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Exported networks (backend="onnx"/"openvino") go to a folder of this test session, so every
# run exports afresh and the tests' export counts start from an empty folder. Each pytest-xdist
# worker (`make test` runs two) gets its own: a worker inherits the controller's variable, and
# another worker's exports would change its counts.
import tempfile  # noqa: E402

if "PYTEST_XDIST_WORKER" in os.environ or "SKTRANSFER_EXPORTS" not in os.environ:
    os.environ["SKTRANSFER_EXPORTS"] = tempfile.mkdtemp(prefix="sktransfer-test-exports-")

# The cluster helpers' modules import their optional extra; without it, their doctests are not
# collected (the tests of tests/test_cluster.py skip and say which extra is missing).
import importlib.util  # noqa: E402

collect_ignore = [
    module for module, extra in [("sktransfer/dask.py", "distributed"), ("sktransfer/ray.py", "ray")]
    if importlib.util.find_spec(extra) is None
]
