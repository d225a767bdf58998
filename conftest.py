"""Root pytest configuration: every test and doctest runs offline.

The hub clients read these variables at import time, so they are set before anything imports
huggingface_hub or transformers. A test that needs the network is a bug.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
