"""Process-level registry of loaded models.

Cloning an estimator, or fitting the clones that ``GridSearchCV`` and ``cross_validate`` make,
must not read the weights from disk again. Encoders therefore ask this registry for their model;
it loads each (model identity, device, precision) once per process and hands out the same object.
Models are frozen and used under ``torch.inference_mode``, so sharing them is safe.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from typing import Any, Callable, Hashable


class ModelRegistry:
    """A small LRU map from model keys to loaded models.

    Parameters
    ----------
    max_models : int, default=4
        How many models stay loaded at once; the least recently used one is released when a new
        one would exceed it. Estimators that hold a model keep it alive regardless.

    Attributes
    ----------
    load_counts : collections.Counter
        How many times each key was loaded from disk in this process (for tests and diagnostics).
    """

    def __init__(self, max_models: int = 4):
        self.max_models = max_models
        self.load_counts: Counter = Counter()
        self._models: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """Return the model stored under ``key``, calling ``load()`` only if it is absent."""
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        # Load outside the global lock so that two different models can load concurrently, but
        # only once per key even when several threads ask for it at the same moment.
        with key_lock:
            with self._lock:
                if key in self._models:
                    return self._models[key]
            model = load()
            with self._lock:
                self.load_counts[key] += 1
                self._models[key] = model
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
            return model

    def keys(self) -> list:
        """Keys of the models loaded now, least recently used first."""
        with self._lock:
            return list(self._models)

    def clear(self) -> None:
        """Release every model (and reset the load counters)."""
        with self._lock:
            self._models.clear()
            self.load_counts.clear()


#: The registry shared by every encoder in this process.
model_registry = ModelRegistry()
