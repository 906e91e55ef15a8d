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

    def __init__(self, spec: ModelSpec, session) -> None:
        self.spec = spec
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = session.get_outputs()[0].name
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

    def _run(self, blob: np.ndarray) -> np.ndarray:
        if self._batch_ok or blob.shape[0] == 1:
            return self.session.run([self.output_name], {self.input_name: blob})[0]
        return np.concatenate([self.session.run([self.output_name], {self.input_name: b[None]})[0]
                               for b in blob])

    def embed(self, crops: list[np.ndarray], flip: bool = False) -> np.ndarray:
        """(N, D) L2-normalised embeddings. ``flip``: add the mirrored crop's embedding first."""
        if not crops:
            return np.zeros((0, self.dim or 0), np.float32)
        for c in crops:
            if c.shape[:2] != (self.size, self.size):
                raise ValueError(f"crop must be {self.size}x{self.size}, got {c.shape[:2]}")
        if flip:
            crops = list(crops) + [c[:, ::-1] for c in crops]
        feats = self._run(self.preprocess(crops))
        if flip:
            n = feats.shape[0] // 2
            feats = feats[:n] + feats[n:]
        return l2_normalize(feats)
