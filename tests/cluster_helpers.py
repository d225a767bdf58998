"""Importable by cluster workers (the tests put this folder on their PYTHONPATH).

``CountingTextEncoder`` appends its process id to the file named by ``SKTRANSFER_TEST_LOAD_LOG``
each time it loads a model from disk: Ray actors live in their own processes, so this is how a
test counts model loads per actor.
"""

import os

from sktransfer import TextEncoder


class CountingTextEncoder(TextEncoder):
    def _load_model(self, identity, device):
        log = os.environ.get("SKTRANSFER_TEST_LOAD_LOG")
        if log:
            with open(log, "a") as handle:
                handle.write(f"{os.getpid()}\n")
        return super()._load_model(identity, device)


def worker_load_counts():
    """Model loads per registry key in this process (run on every Dask worker by ``Client.run``)."""
    import sktransfer

    return {key[0]: count for key, count in sktransfer.model_registry.load_counts.items()}
