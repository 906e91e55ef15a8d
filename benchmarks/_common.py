"""Shared helpers of the accuracy benchmarks: a thin wrapper over :mod:`smile2pay_tools.bench.common`.

The scripts here and ``smile2pay bench`` use the same detection/embedding caches, kept in
``results/cache/`` of the repository (git-ignored: landmarks and embeddings are biometric data derived
from the datasets and must not be committed).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from smile2pay_tools.bench import common as _c  # noqa: E402
from smile2pay_tools.bench.common import (check_against_single, json_default,  # noqa: F401
                                    detection_key, embedding_key, machine, make_pipeline, read_csv,
                                    settings_summary, write_json)

DEFAULT_DATA = os.environ.get("SMILE2PAY_DATA", str(REPO.parent / "shared" / "data"))
DEFAULT_MODELS = os.environ.get("SMILE2PAY_MODELS", str(REPO.parent / "shared" / "models"))
CACHE_DIR = REPO / "results" / "cache"
RESULTS_DIR = REPO / "benchmarks" / "results"


def detect_all(pipe, rel_paths, data_root, dataset, desc="detect", use_cache=True):
    return _c.detect_all(pipe, rel_paths, data_root, dataset, desc=desc, use_cache=use_cache, cache_dir=CACHE_DIR)


def embed_all(pipe, rel_paths, dets, data_root, det_key, desc="embed", use_cache=True):
    return _c.embed_all(pipe, rel_paths, dets, data_root, det_key, desc=desc, use_cache=use_cache,
                        cache_dir=CACHE_DIR)
