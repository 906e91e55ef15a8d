"""Model registry (manifest), store (resolve/verify/download) and runtime (sessions)."""
from .manifest import AU_NAMES, MODELS, PACKS, ModelSpec, Pack, get_pack, get_spec
from .store import CheckResult, ModelStore, download, sha256_file

__all__ = ["AU_NAMES", "MODELS", "PACKS", "ModelSpec", "Pack", "get_pack", "get_spec", "CheckResult", "ModelStore",
           "download", "sha256_file"]
