"""The one 1:1 identity scorer: a claim's score is the best cosine between the probe embedding and the
claimed user's templates. ``Gallery.verify_identity``, payment attempts (``verify()``, stream sessions) and
the benchmarks all score through here, so a change of scoring (e.g. mean of the top two) is one edit.
"""
from __future__ import annotations

import numpy as np


def identity_scores(templates: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Scores of several probes against one user's templates: ``(n,)`` best cosine per probe row.
    ``templates`` is ``(t, d)``, ``embeddings`` ``(n, d)`` or ``(d,)``; both L2-normalised."""
    t = np.asarray(templates, dtype=np.float32)
    e = np.asarray(embeddings, dtype=np.float32)
    if e.ndim == 1:
        e = e[None, :]
    if t.ndim != 2 or e.ndim != 2 or t.shape[1] != e.shape[1] or len(t) == 0:
        raise ValueError(f"templates {t.shape} and embeddings {e.shape} do not match")
    return (e @ t.T).max(axis=1)


def identity_score(templates: np.ndarray, embedding: np.ndarray) -> tuple[float, int]:
    """One probe: ``(score, index of the best template)``."""
    t = np.asarray(templates, dtype=np.float32)
    s = t @ np.asarray(embedding, dtype=np.float32).reshape(-1)
    j = int(np.argmax(s))
    return float(s[j]), j
