"""Process-level registry of loaded models (`model_registry`), so that clones and the folds of
``GridSearchCV`` never read the weights again. Keys come from `EncoderIdentity.registry_key`; models
are frozen and used under ``torch.inference_mode``, so sharing them is safe.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class ModelRegistry:
    """A small LRU of loaded models, plus every model a live estimator still holds.

    Parameters
    ----------
    max_models : int, default=4
        How many models the registry itself keeps loaded; the least recently used one is released
        when a new one would exceed it. A released model that an estimator still holds stays
        findable (through a weak reference), so a clone of that estimator gets the same object
        instead of loading a second copy.

    Attributes
    ----------
    load_counts : collections.Counter
        How many times each key was loaded from disk in this process (for tests and diagnostics).
    """

    def __init__(self, max_models: int = 4):
        self.max_models = max_models
        self.load_counts: Counter = Counter()
        self._models: OrderedDict[Hashable, Any] = OrderedDict()
        self._alive: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}

    def _find(self, key):
        """The model under ``key`` if loaded or still alive (the caller holds the lock)."""
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        model = self._alive.get(key)
        if model is not None:  # evicted from the LRU but still held by an estimator: keep it
            self._keep(key, model)
        return model

    def _keep(self, key, model) -> None:
        self._models[key] = model
        self._models.move_to_end(key)
        with contextlib.suppress(TypeError):  # objects without weak references live only in the LRU
            self._alive[key] = model
        while len(self._models) > self.max_models:
            self._models.popitem(last=False)

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """Return the model stored under ``key``, calling ``load()`` only if it is absent."""
        with self._lock:
            model = self._find(key)
            if model is not None:
                return model
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        # Load outside the global lock so that two different models can load concurrently, but
        # only once per key even when several threads ask for it at the same moment.
        with key_lock:
            with self._lock:
                model = self._find(key)
            if model is None:
                model = load()
                with self._lock:
                    self.load_counts[key] += 1
                    self._keep(key, model)
            return model

    def keys(self) -> list:
        """Keys of the models the LRU holds now, least recently used first."""
        with self._lock:
            return list(self._models)

    def clear(self) -> None:
        """Release every model the registry holds (and reset the load counters).

        Estimators that hold a model keep using it; their clones load it again.
        """
        with self._lock:
            self._models.clear()
            self._alive = weakref.WeakValueDictionary()
            self.load_counts.clear()


#: The registry shared by every encoder in this process.
model_registry = ModelRegistry()
