"""Model registry (manifest), store (resolve/verify/download) and runtime (sessions)."""
from .manifest import MODELS, PACKS, ModelSpec, Pack, get_pack, get_spec
from .store import CheckResult, ModelStore, download, sha256_file

__all__ = ["MODELS", "PACKS", "ModelSpec", "Pack", "get_pack", "get_spec", "CheckResult", "ModelStore",
           "download", "sha256_file"]
