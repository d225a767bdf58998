"""Model-name resolution: offline first, and a fast, explanatory failure."""

import pytest

from sktransfer import ModelNotFoundError, TextEncoder
from sktransfer import model_store


def test_default_name_resolves_offline_from_the_model_directory():
    path = model_store.resolve_text_model("all-MiniLM-L6-v2")
    assert path.startswith(str(model_store.models_dir()))
    assert model_store.resolve_text_model("sentence-transformers/all-MiniLM-L6-v2") == path
    assert "sentence-transformers/all-MiniLM-L6-v2" in model_store.available_text_models()


def test_models_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SKTRANSFER_MODELS", str(tmp_path))
    assert model_store.models_dir() == tmp_path
    (tmp_path / "my-model").mkdir()
    (tmp_path / "my-model" / "modules.json").write_text("[]")
    assert model_store.resolve_text_model("my-model") == str(tmp_path / "my-model")


def test_unresolvable_name_fails_fast_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(model_store, "_hub_reachable", no_network)
    with pytest.raises(ModelNotFoundError) as info:
        TextEncoder(model="no-such-org/no-such-model").fit(["a"])
    message = str(info.value)
    assert "no-such-org/no-such-model" in message
    assert "HF_HUB_OFFLINE is set" in message
    assert "network access" in message and "local model folder" in message


def test_unreachable_hub_fails_after_one_connection_check(monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(model_store, "_hub_offline", lambda: False)
    monkeypatch.setattr(model_store, "_hub_reachable", lambda timeout=3.0: calls.append(1) or False)
    real_snapshot = huggingface_hub.snapshot_download

    def local_only(repo_id, **kwargs):
        assert kwargs.get("local_files_only"), "a download was attempted"
        return real_snapshot(repo_id, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", local_only)
    with pytest.raises(ModelNotFoundError, match="hub is unreachable"):
        model_store.resolve_text_model("no-such-model")
    assert calls == [1]


def test_missing_local_folder_is_named(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        model_store.resolve_text_model(str(tmp_path / "absent"))
