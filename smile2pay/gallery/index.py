"""FAISS index wrappers: one small interface over an exact and an approximate index.

* ``FlatIndex``: ``IndexIDMap2(IndexFlatIP)``, exact inner product (= cosine on L2-normalised
  vectors), 64-bit ids, true ``remove_ids``. The default.
* ``HNSWIndex``: ``IndexIDMap2(IndexHNSWFlat)``; HNSW cannot remove a node, so removal is a
  soft delete (the id is filtered out of results) and the graph is rebuilt without the deleted
  nodes once they exceed ``rebuild_fraction`` of the index, or on ``rebuild()`` (``Gallery.compact``).
* ``IVFIndex``: for large galleries. An exact ``FlatIndex`` holds the vectors (search below
  ``train_min`` vectors, exact re-ranking, retraining) and, once trained, an
  ``IndexIVFPQFastScan`` (spherical k-means coarse lists, 4-bit PQ) proposes ``refine`` x k
  candidates that are re-scored exactly. Removal is real in the exact store at once; in the
  IVF lists it is a soft delete (filtered out of candidates) until the lists are refilled from the
  exact store (deleted > ``rebuild_fraction``, or ``rebuild()``): FAISS 1.15's
  ``IndexIVFPQFastScan.remove_ids`` works, but vectors added after it are not found again.

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


class IVFIndex:
    """IVF-PQ fast scan proposing candidates + exact re-ranking (see the module docstring).

    Training is lazy: the first search after the live count reaches ``train_min`` (or 4x the count
    it was last trained on) trains k-means (``nlist`` = 4*sqrt(n) rounded to a power of 2, 64..4096,
    on <= 40 x nlist live vectors) and the PQ, then adds every live vector: at 1M this takes about
    a minute (benchmarks/results/gallery_search.json), paid once per process or growth step.
    ``nprobe`` = ``max(ceil(probe_fraction * nlist), min_probe)`` (at most nlist): 1024 of 4096 lists
    at 1M (recall@1 0.986-0.990, 1.6-1.8 ms), 512 of 1024 at 100k (0.998, 0.43 ms).
    """

    kind = "ivf"

    def __init__(self, dim: int, train_min: int = 20_000, probe_fraction: float = 0.25, min_probe: int = 512,
                 refine: int = 16, pq_m: int | None = None, kmeans_iter: int = 10, rebuild_fraction: float = 0.2,
                 seed: int = 0) -> None:
        self.dim, self.train_min, self.probe_fraction, self.refine = dim, train_min, probe_fraction, refine
        self.min_probe = min_probe
        self.rebuild_fraction = rebuild_fraction
        self.deleted: set[int] = set()        # removed from the exact store, still in the IVF lists
        self.pq_m = pq_m or max(1, dim // 8)
        if dim % self.pq_m:
            raise ValueError(f"dim {dim} is not a multiple of pq_m {self.pq_m}")
        self.kmeans_iter, self.seed = kmeans_iter, seed
        self.exact = FlatIndex(dim)
        self.ivf = None
        self._quantizer = None
        self.trained_on = 0

    @property
    def index(self):  # the exact store (same attribute as the other wrappers)
        return self.exact.index

    @property
    def ntotal(self) -> int:
        return self.exact.ntotal

    @property
    def trained(self) -> bool:
        return self.ivf is not None

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        if not len(ids):
            return
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.exact.add(ids, vecs)
        if self.ivf is not None:
            self.ivf.add_with_ids(vecs, ids)

    def remove(self, ids) -> int:
        ids = np.ascontiguousarray(list(ids), dtype=np.int64)
        if self.ivf is not None and len(ids):
            present = ids[np.isin(ids, self.live_ids())]
            self.deleted.update(int(i) for i in present)
        n = self.exact.remove(ids)
        if self.ivf is not None and len(self.deleted) > self.rebuild_fraction * max(int(self.ivf.ntotal), 1):
            self.refill()
        return n

    def refill(self) -> None:
        """Empty the IVF lists and re-add the live vectors (same centroids and PQ): drops the
        soft-deleted entries from memory."""
        if self.ivf is None:
            return
        ids, X = self._vectors()
        log.info("refilling IVF lists: %d live, %d deleted", len(ids), len(self.deleted))
        self.ivf.reset()
        for s in range(0, len(ids), 65_536):
            self.ivf.add_with_ids(np.ascontiguousarray(X[s:s + 65_536]), ids[s:s + 65_536])
        self.deleted = set()

    def live_ids(self) -> np.ndarray:
        return self.exact.live_ids()

    def _vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, zero-copy view of the exact store's vectors), in storage order."""
        faiss = _faiss()
        n = self.exact.ntotal
        inner = faiss.downcast_index(self.exact.index.index)
        return self.live_ids(), faiss.rev_swig_ptr(inner.get_xb(), n * self.dim).reshape(n, self.dim)

    def _nlist(self, n: int) -> int:
        return int(min(4096, max(64, 2 ** round(np.log2(4 * np.sqrt(max(n, 1)))))))

    def train(self) -> None:
        """(Re)train on the live vectors and re-add them all."""
        faiss = _faiss()
        n = self.ntotal
        ids, X = self._vectors()
        nlist = self._nlist(n)
        rng = np.random.default_rng(self.seed)
        sample = X[np.sort(rng.choice(n, min(n, 40 * nlist), replace=False))]
        log.info("training IVF index: %d vectors, nlist %d, PQ%dx4", n, nlist, self.pq_m)
        km = faiss.Kmeans(self.dim, nlist, niter=self.kmeans_iter, spherical=True, seed=self.seed,
                          min_points_per_centroid=1, max_points_per_centroid=10**9)
        km.train(sample)
        quant = faiss.IndexFlatIP(self.dim)
        quant.add(km.centroids)
        ivf = faiss.IndexIVFPQFastScan(quant, self.dim, nlist, self.pq_m, 4, faiss.METRIC_INNER_PRODUCT)
        ivf.train(sample[: 65_536])          # quantizer already holds nlist centroids: trains the PQ only
        for s in range(0, n, 65_536):
            ivf.add_with_ids(np.ascontiguousarray(X[s:s + 65_536]), ids[s:s + 65_536])
        ivf.nprobe = min(nlist, max(1, self.min_probe, int(np.ceil(self.probe_fraction * nlist))))
        self.ivf, self._quantizer, self.trained_on, self.deleted = ivf, quant, n, set()

    def _maybe_train(self) -> None:
        n = self.ntotal
        if n >= self.train_min and (self.ivf is None or n >= 4 * self.trained_on):
            self.train()

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(q, dtype=np.float32)
        self._maybe_train()
        k = min(k, self.ntotal)
        if self.ivf is None or k <= 0:
            return self.exact.search(q, k)
        _, C = self.ivf.search(q, min(self.ntotal, k * self.refine))
        D = np.full((len(q), k), -np.inf, np.float32)
        I = np.full((len(q), k), -1, np.int64)
        dead = np.fromiter(self.deleted, np.int64, len(self.deleted)) if self.deleted else None
        for r in range(len(q)):
            cand = C[r][C[r] >= 0]
            if dead is not None:
                cand = cand[~np.isin(cand, dead)]
            if not len(cand):
                continue
            s = self.exact.index.reconstruct_batch(cand) @ q[r]     # exact re-ranking
            top = np.argsort(-s, kind="stable")[:k]
            D[r, :len(top)], I[r, :len(top)] = s[top], cand[top]
        return D, I

    def rebuild(self) -> None:
        """Drop soft-deleted entries from the lists; retrain if the gallery outgrew them (4x)."""
        if self.deleted:
            self.refill()
        self._maybe_train()


def make_index(kind: str, dim: int, **params):
    if kind == "flat":
        return FlatIndex(dim)
    if kind == "hnsw":
        return HNSWIndex(dim, **params)
    if kind == "ivf":
        return IVFIndex(dim, **params)
    from ..errors import GalleryError

    raise GalleryError(f"unknown index kind {kind!r} (flat, hnsw or ivf)", code="GALLERY_BAD_INDEX")
