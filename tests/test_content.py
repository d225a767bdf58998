"""The content hashes themselves (sktransfer._content) and the folders sktransfer trusts (sktransfer._folders).

The regression tests of issue 23's families, through the encoders, are in test_identity_content.py;
these pin the mechanisms: stable across processes, memoised only while a file's full stat
signature holds, and refusing what they cannot describe.
"""

import functools
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn
from torchvision import transforms as T

from sktransfer import IdentityError, ImageEncoder, UnsafeFolderError
from sktransfer._content import RACY_NS, file_content_key, folder_digest, object_digest
from sktransfer._folders import private_folder

STABLE = textwrap.dedent("""
    import functools, sys
    from torchvision import transforms as T
    from sktransfer._content import object_digest
    settings = {"sizes": {"small", "large", "medium"}, "names": frozenset({"a", "b", "c"})}
    def scale(image, factor=2):
        return image
    print(object_digest(T.Compose([T.Resize(32), T.CenterCrop(30), T.ToTensor()])))
    print(object_digest(settings))
    print(object_digest(functools.partial(scale, factor=3)))
""")


def test_digests_are_the_same_in_every_process():
    """String hashing differs between processes (PYTHONHASHSEED): sets must not leak that order."""
    outputs = set()
    for seed in ("1", "2", "3"):
        run = subprocess.run([sys.executable, "-c", STABLE], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        outputs.add(run.stdout)
    assert len(outputs) == 1


def test_a_pickled_encoder_with_a_callable_preprocess_transforms_in_a_fresh_process(tmp_path):
    """The after-fit snapshot is a digest: a fresh process must find the unpickled callable unchanged."""
    preprocess = T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    image = np.full((40, 40, 3), 120, dtype=np.uint8)
    encoder = ImageEncoder(net, preprocess=preprocess, device="cpu", num_workers=0).fit([image])
    expected = encoder.transform([image])
    (tmp_path / "encoder.pkl").write_bytes(pickle.dumps(encoder))
    np.save(tmp_path / "image.npy", image)
    script = textwrap.dedent(f"""
        import pickle, numpy as np
        encoder = pickle.loads(open({str(tmp_path / 'encoder.pkl')!r}, 'rb').read())
        np.save({str(tmp_path / 'out.npy')!r}, encoder.transform([np.load({str(tmp_path / 'image.npy')!r})]))
    """)
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "PYTHONHASHSEED": "7"})
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)


def test_objects_differ_exactly_by_what_they_compute_with():
    def factory(size):
        return lambda image: image.resize((size, size))

    assert object_digest(factory(3)) == object_digest(factory(3))
    assert object_digest(factory(3)) != object_digest(factory(4))
    assert object_digest(functools.partial(max, 1)) != object_digest(functools.partial(max, 2))
    assert object_digest([1, 2]) != object_digest((1, 2))  # a list and a tuple are different values
    assert object_digest({"a": 1.0}) != object_digest({"a": 1})
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    b.load_state_dict(a.state_dict())
    assert object_digest(a) == object_digest(b)
    a.register_forward_hook(lambda module, args, output: output * 2)  # hooks change the output
    assert object_digest(a) != object_digest(b)
    shared = torch.ones(3)
    assert object_digest([shared, shared]) != object_digest([torch.ones(3), torch.zeros(3)])
    bf16 = torch.ones(3, dtype=torch.bfloat16)
    assert object_digest(bf16) != object_digest(torch.ones(3))


def test_undescribable_state_is_refused_by_name_and_a_stated_identity_is_accepted():
    def preprocess(image):
        return image

    preprocess.guard = threading.Lock()
    with pytest.raises(IdentityError, match=r"preprocess.__dict__\['guard'\].*__sktransfer_identity__"):
        object_digest(preprocess, "preprocess")
    preprocess.__sktransfer_identity__ = "resize-v1"
    first = object_digest(preprocess, "preprocess")
    preprocess.__sktransfer_identity__ = "resize-v2"
    assert object_digest(preprocess, "preprocess") != first
    preprocess.__sktransfer_identity__ = 3
    with pytest.raises(IdentityError, match="non-empty string"):
        object_digest(preprocess, "preprocess")


def test_a_stated_module_identity_still_counts_its_tensors():
    module = nn.Linear(2, 2)
    module.lock, module.__sktransfer_identity__ = threading.Lock(), "linear-v1"
    before = object_digest(module)
    with torch.no_grad():
        module.weight.add_(1.0)
    assert object_digest(module) != before


def test_a_file_just_written_is_never_memoised_and_an_old_one_is_until_its_stat_changes(tmp_path, monkeypatch):
    import sktransfer._content as content

    path = tmp_path / "image.bin"
    path.write_bytes(b"first")
    key = file_content_key(path)
    path.write_bytes(b"other")  # same size, and well within one timestamp tick
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns))
    assert file_content_key(path) != key
    # Once the file is older than the racy window the hash is memoised: a read is then not repeated.
    monkeypatch.setattr(content, "RACY_NS", -RACY_NS)
    memoised = file_content_key(path)
    reads = []
    monkeypatch.setattr(content, "_feed_file", lambda hasher, p: reads.append(p))
    assert file_content_key(path) == memoised and not reads


def test_folder_digests_follow_symbolic_links_and_refuse_loops(tmp_path):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "sub" / "weights.bin").write_bytes(b"1234")
    plain = folder_digest(model)
    elsewhere = tmp_path / "elsewhere"
    (model / "sub").rename(elsewhere)
    (model / "sub").symlink_to(elsewhere)
    assert folder_digest(model) == plain  # the same files, reached through a link
    (elsewhere / "weights.bin").write_bytes(b"5678")
    assert folder_digest(model) != plain
    (elsewhere / "loop").symlink_to(model)
    with pytest.raises(ValueError, match="symbolic-link loop"):
        folder_digest(model)


def test_private_folders_are_created_owner_only_and_unsafe_ones_refused(tmp_path):
    created = private_folder(tmp_path / "a" / "b", "export folder")
    assert all(os.stat(p).st_mode & 0o777 == 0o700 for p in (tmp_path / "a", created))
    open_folder = tmp_path / "shared"
    open_folder.mkdir()
    os.chmod(open_folder, 0o777)
    with pytest.raises(UnsafeFolderError, match=f"(?s){open_folder}.*writable by its group and every user"):
        private_folder(open_folder, "export folder")
    with pytest.raises(UnsafeFolderError, match="folder above"):
        private_folder(open_folder / "mine", "export folder")  # others could rename it away
    os.chmod(open_folder, 0o1777)  # sticky, like /tmp: a folder of ours inside is safe
    assert os.stat(private_folder(open_folder / "mine", "export folder")).st_mode & 0o777 == 0o700
    if os.geteuid() == 0:
        foreign = tmp_path / "foreign"
        foreign.mkdir(mode=0o700)
        os.chown(foreign, 12345, 12345)
        with pytest.raises(UnsafeFolderError, match="belongs to another user"):
            private_folder(foreign, "embedding cache folder")
        assert private_folder(foreign, "embedding cache folder", create=False, foreign_owner_ok=True) == foreign


def test_content_hashes_stay_fast_for_a_grid_search_of_paths(tmp_path, monkeypatch):
    """A memoised path costs a stat, not a read (counted, not timed)."""
    import sktransfer._content as content

    paths = []
    for i in range(20):
        paths.append(tmp_path / f"{i}.bin")
        paths[-1].write_bytes(bytes([i]) * 100)
    old = time.time_ns() - 10 * RACY_NS
    for path in paths:
        os.utime(path, ns=(old, old))  # mtime only: ctime stays recent, so mimic age through the window
    monkeypatch.setattr(content, "RACY_NS", -RACY_NS)
    [file_content_key(p) for p in paths]
    reads = []
    monkeypatch.setattr(content, "_feed_file", lambda hasher, p: reads.append(p))
    [file_content_key(p) for p in paths]
    assert reads == []


def test_dataclass_instances_and_class_namespaces_are_described():
    """A frozen dataclass (its fields sit in mappingproxy objects) is content, not an error."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Settings:
        size: int = 32

    assert object_digest(Settings(32)) == object_digest(Settings(32))
    assert object_digest(Settings(32)) != object_digest(Settings(64))
