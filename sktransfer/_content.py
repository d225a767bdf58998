"""Content hashes: every hash an encoder's identity and the cache keys are made of (docs/cache.md).

Taken from content, never from a path, a ``repr`` or a probe output: `text_key`, `file_content_key`,
`folder_digest`, `object_digest`. File hashes are memoised under the full ``stat`` signature (``cp -p``
keeps mtime but not ctime), never for a file changed in the last two seconds.
"""

from __future__ import annotations

import copyreg
import dis
import enum
import functools
import hashlib
import json
import os
import stat
import sys
import threading
import time
import types
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["IdentityError", "NotRegularFileError", "bytes_key", "digest", "file_content_key", "file_digest",
           "file_kind", "folder_digest", "module_content_hash", "object_digest", "open_regular_file", "pixels_key",
           "sha256_hex", "stat_signature", "text_key"]

#: Attribute through which an object states its own identity (a string it vouches for).
IDENTITY_ATTRIBUTE = "__sktransfer_identity__"

#: A file whose ctime is this recent may still change within one timestamp tick: not memoised.
RACY_NS = 2_000_000_000

#: Top-level packages whose functions and classes are identified by name and version, not code.
LIBRARIES = frozenset({
    "torch", "torchvision", "torchaudio", "timm", "numpy", "scipy", "PIL", "sklearn", "transformers",
    "sentence_transformers", "tokenizers", "safetensors", "huggingface_hub", "open_clip", "peft", "pandas",
    "cv2", "kornia", "albumentations", "skimage", "onnxruntime", "openvino", "sktransfer",
})


class IdentityError(TypeError):
    """An object has state that sktransfer cannot identify by content (the message names it)."""


class NotRegularFileError(ValueError):
    """A path names something other than a regular file (a named pipe, a device, a folder, a socket)."""

    def __init__(self, path, kind: str):
        self.path = os.fspath(path)
        self.kind = kind
        super().__init__(f"{self.path!r} is not a regular file ({kind})")


def file_kind(mode: int) -> str:
    """What a ``stat`` mode names, in words, for errors about paths that are not regular files."""
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return kind
    return "a special file"


def open_regular_file(path):
    """Open a regular file for binary reading; anything else raises `NotRegularFileError`.

    A pipe or a device would block or never end (``/dev/zero``): the type is checked on the descriptor
    itself (no swap after a check), opened non-blocking (a pipe waits for a writer)."""
    found = os.stat(path)
    if not stat.S_ISREG(found.st_mode):  # a socket cannot even be opened: say what it is first
        raise NotRegularFileError(path, file_kind(found.st_mode))
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise NotRegularFileError(path, file_kind(found.st_mode))
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def digest(payload: Any) -> str:
    """SHA-256 of a JSON payload with sorted keys."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def stat_signature(path) -> tuple:
    """The resolved absolute location of ``path`` and its full stat: any replacement or write changes it."""
    st = os.stat(path)
    return (os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _Memo:
    """Results keyed by stat signatures, bounded; results for racily recent files are never kept."""

    def __init__(self, max_entries: int):
        self.max_entries, self._entries, self._lock = max_entries, {}, threading.Lock()

    def get(self, key, newest_ctime_ns: int, compute):
        found = self._entries.get(key)
        if found is None:
            read_at = time.time_ns()
            found = compute()
            if read_at - newest_ctime_ns >= RACY_NS:  # else the next write may keep every stamp
                with self._lock:
                    if len(self._entries) >= self.max_entries:
                        self._entries.clear()
                    self._entries[key] = found
        return found


_FILE_KEYS = _Memo(1_000_000)
_MODEL_HASHES = _Memo(10_000)


def _feed_file(hasher, path) -> None:
    with open_regular_file(path) as handle:  # a pipe or a device would never end
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)


def sha256_hex(data) -> str:
    """SHA-256 of bytes (exported files, tuned weights), as hex."""
    return hashlib.sha256(data).hexdigest()


def text_key(text: str) -> bytes:
    """Cache key of a text: a 16-byte BLAKE2b of its exact UTF-8 bytes."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


#: Salt of the cache keys of image files' bytes, bumped when decoding bytes into pixels changes
#: (2, issue 28: 16-bit and float files take their range from their mode). In-memory images are
#: keyed by their decoded pixels and need no salt.
FILE_DECODING = b"file-decoding-2:"


def bytes_key(data) -> bytes:
    """Cache key of an encoded image file's bytes: the same as `file_content_key` of that file."""
    return hashlib.blake2b(FILE_DECODING + bytes(data), digest_size=16).digest()


def pixels_key(size: tuple, pixels: bytes) -> bytes:
    """Cache key of decoded 8-bit RGB pixels of a given size."""
    return hashlib.blake2b(f"rgb:{size}:".encode() + pixels, digest_size=16).digest()


def file_content_key(path) -> bytes:
    """Cache key of an image file: a 16-byte BLAKE2b of its bytes (a renamed file keeps it)."""
    def compute():
        hasher = hashlib.blake2b(FILE_DECODING, digest_size=16)
        _feed_file(hasher, path)
        return hasher.digest()

    signature = stat_signature(path)
    return _FILE_KEYS.get(signature, signature[-1], compute)


def _hash_files(root: Path, files: list) -> str:
    """SHA-256 of the files' relative names and bytes, memoised by their stat signatures."""
    def compute():
        hasher = hashlib.sha256()
        for relative, path in files:
            hasher.update(relative.encode() + b"\0")
            _feed_file(hasher, path)
        return hasher.hexdigest()

    stats = [stat_signature(path) for _, path in files]
    key = (str(root), tuple((relative, *stat[1:]) for (relative, _), stat in zip(files, stats)))
    return _MODEL_HASHES.get(key, max((stat[-1] for stat in stats), default=0), compute)


def _folder_files(root: Path) -> list:
    """Every file under ``root`` with its relative name, symbolic links followed (a loop is an error)."""
    found, on_path = [], {}

    def walk(folder: Path, parts: tuple):
        st = os.stat(folder)
        identity = (st.st_dev, st.st_ino)
        if identity in on_path:
            raise ValueError(f"the model folder {root} contains a symbolic-link loop at {folder}; remove the link")
        on_path[identity] = folder
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                child = parts + (entry.name,)
                # Model cards and VCS/cache metadata (.git, .cache) are read by no loader.
                if entry.name.lower().startswith("readme") or any(part.startswith(".") for part in child):
                    continue
                if entry.is_dir():  # follows symbolic links
                    walk(Path(entry.path), child)
                elif entry.is_file():
                    found.append((child, Path(entry.path)))
        del on_path[identity]

    walk(root, ())
    found.sort(key=lambda item: item[0])  # the order of pathlib's sorted(rglob()): by parts
    return [("/".join(parts), path) for parts, path in found]


def folder_digest(path) -> str:
    """Content hash of every file a loader may read in a model folder (weights, tokenizer, configuration)."""
    root = Path(path).resolve()
    return _hash_files(root, _folder_files(root))


def file_digest(path) -> str:
    """Content hash of one file (a checkpoint), memoised like `folder_digest`."""
    path = Path(path).resolve()
    return _hash_files(path.parent, [(path.name, path)])


def _is_library(module_name) -> bool:
    top = (module_name or "").split(".")[0]
    return top in LIBRARIES or top in sys.stdlib_module_names


def _library_version(module_name) -> str:
    return str(getattr(sys.modules.get((module_name or "").split(".")[0]), "__version__", ""))


def _qualified(obj) -> str:
    module = getattr(obj, "__module__", None)
    if module is None and isinstance(getattr(obj, "__self__", None), types.ModuleType):
        module = obj.__self__.__name__
    return f"{module}.{getattr(obj, '__qualname__', getattr(obj, '__name__', type(obj).__qualname__))}"


#: Module attributes that never change what forward computes (the encoder runs a copy in eval mode).
_MODULE_SKIP = frozenset({"training"})

#: Class attributes that say nothing about behaviour.
_CLASS_SKIP = frozenset({"__dict__", "__weakref__", "__doc__", "__module__", "__qualname__", "__annotations__",
                         "__firstlineno__", "__static_attributes__", "_abc_impl", "__parameters__",
                         "__orig_bases__", "__slotnames__"})


#: Objects described by a tag (None: their type's name) and some of their attributes.
_PARTS = ((types.MethodType, "method", ("__func__", "__self__")), ((staticmethod, classmethod), None, ("__func__",)),
          (property, "property", ("fget", "fset", "fdel")), (functools.partial, "partial", ("func", "args", "keywords")))


class _Describer:
    """Feeds a canonical, process-independent description of an object graph into a hash."""

    MAX_DEPTH = 400

    def __init__(self, hasher, root: str):
        self.hasher, self.root = hasher, root
        # Each object is hashed on its own and its parent takes that digest, so an object reached
        # twice counts the same as two equal copies (a pickle round trip may split or merge them).
        self._done: dict = {}  # id -> digest of an object already described
        self._stack: dict = {}  # id -> position, for the objects being described (cycles)
        self._frames: list = []  # per open object: the lowest stack position a cycle inside it reached
        self._alive: list = []  # keeps temporaries alive so that their ids stay unique
        self._global_hooks_done = False

    def feed(self, *parts) -> None:
        for part in parts:
            data = part if isinstance(part, (bytes, bytearray, memoryview)) else str(part).encode("utf-8", "surrogatepass")
            self.hasher.update(len(data).to_bytes(8, "little"))
            self.hasher.update(data)

    def refuse(self, path: str, obj, why: str):
        raise IdentityError(
            f"{path} ({type(obj).__module__}.{type(obj).__qualname__}) cannot be identified by its content: {why}. "
            "sktransfer must know everything that computes the vectors to cache them safely. Remove that state from "
            f"the object, or give the object (or {self.root}) an identity you vouch for, a string attribute that you "
            f"change whenever its output changes: obj.{IDENTITY_ATTRIBUTE} = 'my-preprocessing-v1'."
        )

    def describe(self, obj, path: str, depth: int = 0) -> None:
        if depth > self.MAX_DEPTH:
            self.refuse(path, obj, f"it nests deeper than {self.MAX_DEPTH} levels")
        if obj is None or isinstance(obj, (bool, int, float, complex, str)):
            return self.feed(type(obj).__name__, repr(obj))
        if isinstance(obj, (bytes, bytearray)):
            return self.feed("bytes", bytes(obj))
        key = id(obj)
        if key in self._done:
            return self.feed("object", self._done[key])
        if key in self._stack:  # a cycle: its position relative to here, the same after a pickle round trip
            position = self._stack[key]
            self.feed("cycle", len(self._stack) - position)
            self._frames[-1] = min(self._frames[-1], position)
            return
        self._alive.append(obj)
        parent, self.hasher = self.hasher, hashlib.sha256()
        position = self._stack[key] = len(self._stack)
        self._frames.append(position)
        try:
            stated = self._stated_identity(obj, path)
            if stated is not None:
                self.feed("stated", _qualified(type(obj)), stated)
                if isinstance(obj, torch.nn.Module):  # its tensors still count: training changes them
                    for name, tensor in [*obj.named_parameters(), *obj.named_buffers()]:
                        self.feed(name)
                        self._tensor(tensor, f"{path}.{name}")
            else:
                self._describe_new(obj, path, depth + 1)
            own = self.hasher.digest()
        finally:
            self.hasher = parent
            del self._stack[key]
            reached = self._frames.pop()
        if reached < position:  # part of a cycle through an outer object: its digest depends on that context
            self._frames[-1] = min(self._frames[-1], reached)
        else:
            self._done[key] = own
        self.feed("object", own)

    def _stated_identity(self, obj, path):
        if isinstance(obj, (type, types.ModuleType)):
            return None
        try:
            stated = obj.__dict__.get(IDENTITY_ATTRIBUTE) if hasattr(obj, "__dict__") else None
            stated = getattr(type(obj), IDENTITY_ATTRIBUTE, None) if stated is None else stated
        except Exception:  # an object whose __dict__ access fails states nothing
            return None
        if stated is None:
            return None
        if isinstance(stated, property):
            stated = getattr(obj, IDENTITY_ATTRIBUTE)
        if not isinstance(stated, str) or not stated:
            raise IdentityError(f"{path}.{IDENTITY_ATTRIBUTE} must be a non-empty string, got {stated!r}")
        return stated

    def _describe_new(self, obj, path: str, depth: int) -> None:
        if isinstance(obj, torch.Tensor):
            self._tensor(obj, path)
        elif isinstance(obj, np.ndarray):
            self._array(obj, path, depth)
        elif isinstance(obj, np.generic):
            self.feed("np", obj.dtype.str, repr(obj.item()))
        elif isinstance(obj, (list, tuple, dict, types.MappingProxyType, set, frozenset)):
            self._container(obj, path, depth)
        elif isinstance(obj, enum.Enum):
            self.feed("enum", _qualified(type(obj)), obj.name)
            self.describe(obj.value, f"{path}.value", depth)
        elif isinstance(obj, types.ModuleType):
            self.feed("module", obj.__name__, _library_version(obj.__name__))
        elif isinstance(obj, type):
            self._class(obj, path, depth)
        elif isinstance(obj, types.FunctionType):
            self._function(obj, path, depth)
        elif isinstance(obj, types.CodeType):
            self._code(obj, path, depth)
        elif parts := next((entry for entry in _PARTS if isinstance(obj, entry[0])), None):
            self.feed(parts[1] or type(obj).__name__)
            for name in parts[2]:
                self.describe(getattr(obj, name), f"{path}.{name}", depth)
        elif isinstance(obj, (types.BuiltinFunctionType, types.MethodWrapperType)):
            self.feed("builtin", _qualified(obj))
            owner = getattr(obj, "__self__", None)
            if owner is not None and not isinstance(owner, (types.ModuleType, type)):
                self.describe(owner, f"{path}.__self__", depth)  # a bound method of a live object
        elif isinstance(obj, (types.WrapperDescriptorType, types.MethodDescriptorType,
                              types.ClassMethodDescriptorType, types.GetSetDescriptorType,
                              types.MemberDescriptorType)):
            self.feed("descriptor", _qualified(obj.__objclass__), obj.__name__)
        elif isinstance(obj, weakref.ref):
            self.feed("weakref")
            self.describe(obj(), f"{path}()", depth)
        elif isinstance(obj, torch.nn.Module):
            self._module(obj, path, depth)
        elif isinstance(obj, (torch.dtype, torch.device, torch.memory_format, torch.layout)):
            self.feed("torch", str(obj))
        else:
            self._reduced(obj, path, depth)

    def _tensor(self, tensor, path: str) -> None:
        tensor = tensor.detach()
        if tensor.is_meta:
            self.refuse(path, tensor, "it is a meta tensor, without values")
        try:
            if tensor.layout != torch.strided:
                tensor = tensor.to_dense()
            if tensor.is_quantized:
                tensor = tensor.int_repr()
            data = tensor.cpu().contiguous().reshape(-1)
            raw = data.view(torch.uint8).numpy() if data.numel() else np.empty(0, np.uint8)
        except (RuntimeError, TypeError) as exc:
            self.refuse(path, tensor, f"its values cannot be read ({exc})")
        self.feed("tensor", str(tensor.dtype), tuple(tensor.shape))
        self.feed(memoryview(raw))

    def _array(self, array, path: str, depth: int) -> None:
        if array.dtype == object:
            self.feed("objects", array.shape)
            for i, value in enumerate(array.reshape(-1)):
                self.describe(value, f"{path}.flat[{i}]", depth)
            return
        self.feed("ndarray", array.dtype.str, array.shape)
        self.feed(memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8)))

    def _container(self, obj, path: str, depth: int) -> None:
        if isinstance(obj, (set, frozenset)):
            # Iteration order of a set depends on string hashing, which differs between processes.
            self.feed(type(obj).__qualname__, *sorted(object_digest(value, f"{path} item") for value in obj))
        elif isinstance(obj, (list, tuple)):
            self.feed(type(obj).__qualname__, len(obj))
            for i, value in enumerate(obj):
                self.describe(value, f"{path}[{i}]", depth)
        else:
            self.feed(type(obj).__qualname__, len(obj))
            for name, value in list(obj.items()):
                self.describe(name, f"{path}[{name!r}]", depth)
                self.describe(value, f"{path}[{name!r}]", depth)
        # A subclass of a built-in container also computes with its class's code and its own attributes.
        if type(obj) not in (list, tuple, dict, set, frozenset, types.MappingProxyType):
            self.describe(type(obj), f"{path}.__class__", depth)
            self.describe(getattr(obj, "default_factory", None), f"{path}.default_factory", depth)
            if hasattr(obj, "__dict__"):
                self.describe(dict(vars(obj)), f"{path}.__dict__", depth)

    def _class(self, cls, path: str, depth: int) -> None:
        if _is_library(cls.__module__):
            self.feed("class", _qualified(cls), _library_version(cls.__module__))
            return
        self.feed("user class", cls.__qualname__)
        for base in cls.__bases__:
            self.describe(base, f"{path}.__bases__", depth)
        for name, value in sorted(vars(cls).items()):
            if name not in _CLASS_SKIP:
                self.describe(name, path, depth)
                self.describe(value, f"{path}.{name}", depth)

    def _function(self, function, path: str, depth: int) -> None:
        if _is_library(function.__module__):
            self.feed("function", _qualified(function), _library_version(function.__module__))
            return
        self.feed("user function")
        self._code(function.__code__, f"{path}.__code__", depth)
        self.describe(function.__defaults__, f"{path}.__defaults__", depth)
        self.describe(function.__kwdefaults__, f"{path}.__kwdefaults__", depth)
        loaded, attributes = _names_used(function.__code__)
        for name, cell in zip(function.__code__.co_freevars, function.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell (a name assigned later)
                value = "<empty cell>"
            self.describe(name, path, depth)
            self._read_value(value, attributes, f"{path} (closure variable {name!r})", depth)
        namespace, builtins = function.__globals__, function.__globals__.get("__builtins__", {})
        for name in sorted(loaded):
            if name in namespace:
                self.describe(name, path, depth)
                self._read_value(namespace[name], attributes, f"{path} (global {name!r})", depth)
            elif name not in (builtins if isinstance(builtins, dict) else vars(builtins)):
                self.feed("unbound global", name)
        self.describe(dict(function.__dict__), f"{path}.__dict__", depth)

    def _read_value(self, value, attributes: set, path: str, depth: int) -> None:
        """A value a function reads; of your own module (``helpers.act(x)``), what it reads of it too."""
        self.describe(value, path, depth)
        if isinstance(value, types.ModuleType) and not _is_library(value.__name__):
            for attribute in sorted(attributes & set(vars(value))):
                self.describe(attribute, path, depth)
                self.describe(getattr(value, attribute), f"{path}.{attribute}", depth)

    def _code(self, code, path: str, depth: int) -> None:
        self.feed("code", sys.version_info[:2], code.co_code, code.co_argcount, code.co_kwonlyargcount,
                  code.co_flags, code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars)
        for i, const in enumerate(code.co_consts):
            self.describe(const, f"{path}.co_consts[{i}]", depth)

    def _module(self, module, path: str, depth: int) -> None:
        self.describe(type(module), f"{path}.__class__", depth)
        for name, value in module.__dict__.items():
            if name not in _MODULE_SKIP:
                self.describe(name, path, depth)
                # Hooks are keyed by torch's process-wide handle counter: the hooks in order are what counts.
                self.describe(list(value.values()) if "hook" in name and isinstance(value, dict) else value,
                              f"{path}.{name}", depth)
        if not self._global_hooks_done:  # hooks registered for every module of the process
            self._global_hooks_done = True
            from torch.nn.modules import module as torch_module

            for name in ("_global_forward_hooks", "_global_forward_pre_hooks"):
                self.describe(list(getattr(torch_module, name, {}).values()), f"torch {name}", depth)

    def _reduced(self, obj, path: str, depth: int) -> None:
        """Any other object, as the pickler sees it (``__reduce_ex__``), with its class's code."""
        try:
            reduced = obj.__reduce_ex__(4)
        except Exception as exc:  # a lock, an open file, a generator, a C object without pickling
            self.refuse(path, obj, f"it cannot be pickled ({type(exc).__name__}: {exc})")
        if isinstance(reduced, str):  # a global singleton or a wrapped function, pickled by name
            self.feed("global", _qualified(type(obj)), reduced)
            if (wrapped := getattr(obj, "__wrapped__", None)) is not None:
                self.describe(wrapped, f"{path}.__wrapped__", depth)
            return
        constructor, args, state, list_items, dict_items = (tuple(reduced) + (None,) * 5)[:5]
        self.feed("object")
        self.describe(type(obj), f"{path}.__class__", depth)
        if constructor is not copyreg.__newobj__ and constructor is not getattr(copyreg, "__newobj_ex__", None):
            self.describe(constructor, f"{path} (reconstructor)", depth)
        self.describe(args, f"{path} (constructor arguments)", depth)
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            for part in state:  # (__dict__, __slots__ values)
                self.describe(part, path, depth)
        else:
            self.describe(state, f"{path} (state)", depth)
        # Attributes __getstate__ leaves out, which the code may still read: by content, else by type.
        if isinstance(attributes := getattr(obj, "__dict__", None), dict):
            pickled = state[0] if isinstance(state, tuple) and len(state) == 2 else state
            for name in sorted(set(attributes) - set(pickled if isinstance(pickled, dict) else {})):
                try:
                    part = object_digest(attributes[name], f"{path}.{name}")
                except IdentityError:
                    part = "opaque " + _qualified(type(attributes[name]))
                self.feed("left out of the pickle", name, part)
        if list_items is not None:
            self.describe(list(list_items), f"{path} (items)", depth)
        if dict_items is not None:
            self.describe(dict(dict_items), f"{path} (items)", depth)


def _names_used(code) -> tuple[set, set]:
    """The global names a code object (and the code nested in it) loads, and the attribute names it uses."""
    loaded, attributes, codes = set(), set(), [code]
    while codes:
        code = codes.pop()
        for instruction in dis.get_instructions(code):
            if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL", "DELETE_GLOBAL"):
                loaded.add(instruction.argval)
            elif instruction.opname in ("LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR", "IMPORT_FROM"):
                attributes.add(instruction.argval)
        codes.extend(const for const in code.co_consts if isinstance(const, types.CodeType))
    return loaded, attributes


def object_digest(obj, what: str = "object") -> str:
    """Content hash of everything ``obj`` computes with: tensors, the state a pickler sees, the code of
    user functions and classes (defaults, closures, globals); library code by name and version.

    ``what`` names the object in the `IdentityError` raised for a part without describable content.
    """
    hasher = hashlib.sha256()
    try:
        _Describer(hasher, what).describe(obj, what)
    except RecursionError:
        raise IdentityError(f"{what} nests too deeply to be identified; give it an {IDENTITY_ATTRIBUTE} "
                            "string that you vouch for.") from None
    return hasher.hexdigest()


def module_content_hash(module) -> str:
    """Hash of everything that decides a module's output: tensors, state and code (with torch's version)."""
    return digest({"module": object_digest(module, "model"), "torch": torch.__version__.split("+")[0]})
