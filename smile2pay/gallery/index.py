"""FAISS index wrappers: one small interface over an exact and an approximate index.

* ``FlatIndex``: ``IndexIDMap2(IndexFlatIP)``, exact inner product (= cosine on L2-normalised
  vectors), 64-bit ids, true ``remove_ids``. The default.
* ``HNSWIndex``: ``IndexIDMap2(IndexHNSWFlat)``; HNSW cannot remove a node, so removal is a
  soft delete (the id is filtered out of results) and the graph is rebuilt without the deleted
  nodes once they exceed ``rebuild_fraction`` of the index, or on ``rebuild()`` (``Gallery.compact``).

Indexes live in memory only (the gallery rebuilds them from SQLite on open), so no plaintext
vector is ever written to disk by FAISS.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def _faiss():
    import faiss

    return faiss


class FlatIndex:
    kind = "flat"

    def __init__(self, dim: int) -> None:
        faiss = _faiss()
        self.dim = dim
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32),
                                    np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids) -> int:
        ids = np.ascontiguousarray(list(ids), dtype=np.int64)
        if not len(ids):
            return 0
        return int(self.index.remove_ids(_faiss().IDSelectorBatch(ids)))

    def live_ids(self) -> np.ndarray:
        return _faiss().vector_to_array(self.index.id_map).astype(np.int64)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.ntotal)
        if k <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        return self.index.search(np.ascontiguousarray(q, dtype=np.float32), k)

    def rebuild(self) -> None:  # exact index: removal is real, nothing to do
        return None


class HNSWIndex:
    kind = "hnsw"

    def __init__(self, dim: int, m: int = 32, ef_construction: int = 80, ef_search: int = 128,
                 rebuild_fraction: float = 0.2) -> None:
        self.dim, self.m, self.ef_construction, self.ef_search = dim, m, ef_construction, ef_search
        self.rebuild_fraction = rebuild_fraction
        self.deleted: set[int] = set()
        self._new()

    def _new(self) -> None:
        faiss = _faiss()
        inner = faiss.IndexHNSWFlat(self.dim, self.m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = self.ef_construction
        inner.hnsw.efSearch = self.ef_search
        self._inner = inner
        self.index = faiss.IndexIDMap2(inner)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) - len(self.deleted)

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32),
                                    np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids) -> int:
        present = set(self.live_ids().tolist())
        gone = [int(i) for i in ids if int(i) in present]
        self.deleted.update(gone)
        if self.deleted and len(self.deleted) > self.rebuild_fraction * max(int(self.index.ntotal), 1):
            self.rebuild()
        return len(gone)

    def live_ids(self) -> np.ndarray:
        all_ids = _faiss().vector_to_array(self.index.id_map).astype(np.int64)
        if not self.deleted:
            return all_ids
        return all_ids[~np.isin(all_ids, np.fromiter(self.deleted, np.int64))]

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n_all = int(self.index.ntotal)
        k_eff = min(k + len(self.deleted), n_all)
        if k_eff <= 0 or self.ntotal <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        self._inner.hnsw.efSearch = max(self.ef_search, k_eff)
        D, I = self.index.search(np.ascontiguousarray(q, dtype=np.float32), k_eff)
        if self.deleted:
            k_out = min(k, self.ntotal)
            Do = np.full((len(q), k_out), -np.inf, np.float32)
            Io = np.full((len(q), k_out), -1, np.int64)
            for r in range(len(q)):
                keep = [j for j in range(k_eff) if I[r, j] >= 0 and int(I[r, j]) not in self.deleted][:k_out]
                Do[r, :len(keep)], Io[r, :len(keep)] = D[r, keep], I[r, keep]
            return Do, Io
        return D, I

    def rebuild(self) -> None:
        """Rebuild the graph from the live vectors (drops soft-deleted nodes from memory)."""
        if not self.deleted:
            return
        all_ids = _faiss().vector_to_array(self.index.id_map).astype(np.int64)
        keep = ~np.isin(all_ids, np.fromiter(self.deleted, np.int64))
        vecs = self._inner.reconstruct_n(0, int(self._inner.ntotal))[keep]
        ids = all_ids[keep]
        log.info("rebuilding HNSW index: %d live, %d deleted", len(ids), len(self.deleted))
        self.deleted = set()
        self._new()
        self.add(ids, vecs)


def make_index(kind: str, dim: int, **params):
    if kind == "flat":
        return FlatIndex(dim)
    if kind == "hnsw":
        return HNSWIndex(dim, **params)
    from ..errors import GalleryError

    raise GalleryError(f"unknown index kind {kind!r} (flat or hnsw)", code="GALLERY_BAD_INDEX")
