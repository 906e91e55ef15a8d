"""Identity embedding: any ArcFace-style ONNX recogniser, fed as its manifest entry says."""
from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..models.manifest import ModelSpec


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(n, 1e-12)


class IdentityEmbedder:
    """Aligned BGR crop(s) -> L2-normalised embedding(s)."""

    def __init__(self, spec: ModelSpec, session, feature_outputs: tuple[str, ...] = ()) -> None:
        self.spec = spec
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = session.get_outputs()[0].name
        #: inner tensors the session also returns (the smile probe's features; empty: the embedding only)
        self.feature_outputs = tuple(feature_outputs)
        outs = {o.name for o in session.get_outputs()}
        missing = [n for n in self.feature_outputs if n not in outs]
        if missing:
            raise ModelError(f"{spec.file}: the session does not return {missing}", code="MODEL_LOAD_FAILED",
                             file=spec.file)
        shape = inp.shape
        if len(shape) != 4:
            raise ModelError(f"{spec.file}: expected an NCHW image input, got shape {shape}",
                             code="MODEL_LOAD_FAILED", file=spec.file)
        self.size = spec.input_size[0] if spec.input_size else int(shape[2])
        self.dim = int(session.get_outputs()[0].shape[-1]) if isinstance(session.get_outputs()[0].shape[-1],
                                                                         int) else spec.embedding_size
        fixed_batch = shape[0]
        self._batch_ok = not (isinstance(fixed_batch, int) and fixed_batch == 1)

    def preprocess(self, crops: list[np.ndarray]) -> np.ndarray:
        return self.spec.to_blob(np.stack(crops))

    def _run(self, blob: np.ndarray, names: list[str] | None = None) -> list[np.ndarray]:
        names = names or [self.output_name]
        if self._batch_ok or blob.shape[0] == 1:
            return self.session.run(names, {self.input_name: blob})
        parts = [self.session.run(names, {self.input_name: b[None]}) for b in blob]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(names))]

    def _checked(self, crops: list[np.ndarray], flip: bool) -> list[np.ndarray]:
        for c in crops:
            if c.shape[:2] != (self.size, self.size):
                raise ValueError(f"crop must be {self.size}x{self.size}, got {c.shape[:2]}")
        return list(crops) + [c[:, ::-1] for c in crops] if flip else list(crops)

    def embed(self, crops: list[np.ndarray], flip: bool = False) -> np.ndarray:
        """(N, D) L2-normalised embeddings. ``flip``: add the mirrored crop's embedding first."""
        return self.embed_with_features(crops, flip, features=False)[0]

    def embed_with_features(self, crops: list[np.ndarray], flip: bool = False, features: bool = True
                            ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Embeddings as :meth:`embed`, and the inner tensors :attr:`feature_outputs` of the same forward pass
        (of the crops as given, not their mirrors; an empty list when ``features`` is False or none are set)."""
        if not crops:
            return np.zeros((0, self.dim or 0), np.float32), []
        n = len(crops)
        names = [self.output_name] + (list(self.feature_outputs) if features else [])
        res = self._run(self.preprocess(self._checked(crops, flip)), names)
        feats = res[0]
        if flip:
            feats = feats[:n] + feats[n:]
        return l2_normalize(feats), [t[:n] for t in res[1:]]
