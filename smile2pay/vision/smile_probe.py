"""The identity network's smile probe: a smile logit read from the recogniser's own inner features.

Why: ArcFace MobileFaceNet (``w600k_mbf``, the pack's identity model) has seen 600k people in the wild; a
linear probe on two of its inner feature maps ranks in-the-wild smiles better than the AU network trained on
the same labels (FER+ test AUC 0.993 against 0.982, ``benchmarks/au_identity_features.py``). Running the
recogniser on every frame would double the AU stage's cost, so the probe is read only where the identity
forward runs anyway: on the frames a decision embeds. The forward returns the two tensors beside the
embedding (~0.1 ms more), pooling them costs ~0.65 ms and the probe itself is one dot product.

Features (:func:`pool_bands`): the tensors :data:`FEATURE_TENSORS` of ``w600k_mbf`` (``473``: 256 x 14 x 14,
``509``: 512 x 7 x 7), each pooled to its global mean and the means of three horizontal bands (eyes, nose,
mouth): 3,072 numbers a face. Probe: standardised L2 logistic regression, the standardisation folded into
one weight vector (``smile_probe.npz``: ``w`` (3072,), ``b``, ``tensors``, ``recognizer``, ``meta``). The
decision fuses the logit into AU6 / AU12 as ``sigmoid((1 - weight) logit(p) + weight * z)``
(:func:`smile2pay.decision.engine.fuse_probe`) and judges those with their own calibrated thresholds
(``au_probe`` in the calibration file).

**The smile tail (since 2026-12-07).** A probe file may name a tail (``tail_sha256``): a copy of the
recogniser's last nodes fine-tuned for smiles (``smile_tail.onnx``, ``smile2pay_tools.train.smile_tail``). v3
(16th stop): the recogniser returns ``473`` and the tail turns it into its own ``509`` (~1.1 ms a face on one
thread). v4 (17th stop) names the tail's input too (``tail_input`` ``462``): the tail starts one block earlier
and returns its own ``473`` and ``509`` (~1.6 ms). The identity network itself, its embedding and its thresholds
are untouched. :attr:`SmileProbe.recognizer_tensors` names what the recogniser must return; the pipeline
attaches the tail's session (:meth:`SmileProbe.attach_tail`, sha256-checked against the probe, its input and
outputs checked against the probe's tensors).

Training: ``python -m smile2pay_tools.train.smile_tail`` (the tail), then ``python
benchmarks/au_identity_features.py --probe-ck --export-probe FILE`` (the read-out: FER+ training split, LFW
training people, CK+; never the report sets' faces). Licence: read from InsightFace weights
(non-commercial research) and fitted on FER2013 / LFW / CK+ faces (research only): research/evaluation only.
"""
from __future__ import annotations

import hashlib
import io
import json

import numpy as np

from ..errors import ModelError

#: inner outputs of w600k_mbf the probe reads (names as in the ONNX file)
FEATURE_TENSORS = ("473", "509")


def _band_matrix(h: int, w: int, dtype) -> np.ndarray:
    """(H * W, 4) averaging weights: the global mean, then the three horizontal bands (top to bottom)."""
    m = np.zeros((h, w, 4), np.float64)
    m[:, :, 0] = 1.0 / (h * w)
    for k, r in enumerate(np.array_split(np.arange(h), 3)):
        m[r, :, k + 1] = 1.0 / (len(r) * w)
    return m.reshape(h * w, 4).astype(dtype)


def pool_bands(t: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, 4C): the global mean, then the means of three horizontal bands (top to bottom).
    One matrix product (0.06 ms for the probe's two tensors on one thread, against 0.37 ms for four ``mean``
    calls each); float32 unless the input is float64."""
    t = np.asarray(t)
    if t.ndim != 4:
        raise ValueError(f"expected an (N, C, H, W) tensor, got shape {t.shape}")
    n, c, h, w = t.shape
    if h < 3:
        raise ValueError(f"expected at least 3 rows to split into bands, got shape {t.shape}")
    dt = np.float64 if t.dtype == np.float64 else np.float32
    y = np.ascontiguousarray(t, dt).reshape(n * c, h * w) @ _band_matrix(h, w, dt)
    return y.reshape(n, c, 4).transpose(0, 2, 1).reshape(n, 4 * c)


def tail_io(session) -> tuple[str, tuple[str, ...]]:
    """(the recogniser tensor a smile-tail session reads, the tensors it returns), without the ``t`` prefix the
    tail file gives its names: ``("473", ("509",))`` for the v3 tail, ``("462", ("473", "509"))`` for v4."""
    return session.get_inputs()[0].name[1:], tuple(o.name[1:] for o in session.get_outputs())


def run_tail(session, a: np.ndarray, wanted) -> list[np.ndarray]:
    """The tensors ``wanted`` (by recogniser name) from a smile tail run on its input tensor ``a``: each one the
    tail returns, or ``a`` itself where ``wanted`` names the tail's input."""
    inp, outs = tail_io(session)
    have = {inp: a, **dict(zip(outs, session.run(None, {"t" + inp: a})))}
    return [have[k] for k in wanted]


class SmileProbe:
    """Pooled inner tensors of the recogniser -> one smile logit per face."""

    def __init__(self, data: bytes, name: str = "smile_probe") -> None:
        try:
            z = np.load(io.BytesIO(data), allow_pickle=False)
            self.w = np.asarray(z["w"], np.float32).reshape(-1)
            self.b = float(np.asarray(z["b"]).reshape(-1)[0])
            self.tensors = tuple(str(t) for t in z["tensors"])
            self.recognizer = str(z["recognizer"])
            self.meta = json.loads(str(z["meta"]))
            self.tail_sha256 = str(z["tail_sha256"]) if "tail_sha256" in z.files else None
            self.tail_input = str(z["tail_input"]) if "tail_input" in z.files else None
        except Exception as e:  # a corrupt or foreign file: say so, never a KeyError deep in a decision
            raise ModelError(f"{name}: not a smile probe file ({type(e).__name__}: {e})",
                             code="MODEL_LOAD_FAILED", model=name) from e
        self.sha256 = hashlib.sha256(data).hexdigest()
        if not self.tensors or not np.isfinite(self.w).all() or not np.isfinite(self.b):
            raise ModelError(f"{name}: empty or non-finite probe", code="MODEL_LOAD_FAILED", model=name)
        if self.tail_sha256 is not None and len(self.tensors) != 2:
            raise ModelError(f"{name}: a probe read through a tail names the two tensors it pools",
                             code="MODEL_LOAD_FAILED", model=name)
        if self.tail_input is not None and self.tail_sha256 is None:
            raise ModelError(f"{name}: names a tail input but no tail", code="MODEL_LOAD_FAILED", model=name)
        self.name = name
        self._tail = None

    @property
    def recognizer_tensors(self) -> tuple[str, ...]:
        """The inner tensors the recogniser must return: all of :attr:`tensors`, or with a tail its input only:
        :attr:`tail_input` for a deeper tail (which computes both probe tensors), else the first of
        :attr:`tensors` (the tail computes the second)."""
        if not self.tail_sha256:
            return self.tensors
        return (self.tail_input,) if self.tail_input else self.tensors[:1]

    def attach_tail(self, session, sha256: str) -> None:
        """Give the probe the session of its smile tail (``smile_tail.onnx``, :attr:`tail_sha256`): the
        recogniser's ``473 -> 509`` stage fine-tuned for smiles (smile2pay_tools.train.smile_tail)."""
        if self.tail_sha256 is None:
            raise ModelError(f"{self.name} reads no tail", code="MODEL_LOAD_FAILED", model=self.name)
        if sha256 != self.tail_sha256:
            raise ModelError(f"{self.name} was fitted on the smile tail {self.tail_sha256[:12]}, got {sha256[:12]}",
                             code="MODEL_LOAD_FAILED", model=self.name)
        inp, outs = tail_io(session)
        if inp != self.recognizer_tensors[0] or not set(self.tensors) <= {inp, *outs}:
            raise ModelError(f"{self.name}: the smile tail reads t{inp} and returns {outs}; the probe needs "
                             f"{self.tensors} from the recogniser's {self.recognizer_tensors[0]}",
                             code="MODEL_LOAD_FAILED", model=self.name)
        self._tail = session

    def features(self, tensors: list[np.ndarray]) -> np.ndarray:
        """(N, D) pooled features of the inner tensors (in :attr:`tensors` order; with a tail, ``tensors`` holds
        :attr:`recognizer_tensors` and the tail computes the rest)."""
        if self.tail_sha256 is not None:
            if self._tail is None:
                raise ModelError(f"{self.name} needs its smile tail (attach_tail)", code="MODEL_LOAD_FAILED",
                                 model=self.name)
            tensors = run_tail(self._tail, np.asarray(tensors[0], np.float32), self.tensors)
        f = np.concatenate([pool_bands(t) for t in tensors], 1).astype(np.float32)
        if f.shape[1] != self.w.shape[0]:
            raise ModelError(f"smile probe expects {self.w.shape[0]} features, the recogniser gave {f.shape[1]}",
                             code="MODEL_LOAD_FAILED")
        return f

    def logits(self, tensors: list[np.ndarray]) -> np.ndarray:
        """(N,) smile logits (> 0: a smile more likely than not on the probe's training mix)."""
        return self.features(tensors) @ self.w + np.float32(self.b)
