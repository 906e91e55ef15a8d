"""The FER2013 mini-Xception expression classifier (``fer_emotion_minixception.onnx``, MIT): a benchmark anchor,
a training teacher, and (since 2026-12-06) part of the AU stage: its P(happy) on the unpadded centre of the AU
crop is fused into AU6 / AU12 (:func:`smile2pay.vision.au.fuse_happy`, pack ``mobile``).

Input: a grey face crop resized to 64x64, ``x / 255``, then ``(x - 0.5) * 2``, NHWC ``[N, 64, 64, 1]``.
Output: 7 softmax probabilities in :data:`FER_CLASSES` order.

FER2013's own images are loose face crops (forehead to chin); on any other image the closest thing
is the padded AU crop (:func:`~smile2pay.vision.align.norm_crop`, ``pad=0.15``), which is what the
benchmarks feed it. On FER2013 images themselves the whole 48x48 image is its native input.
"""
from __future__ import annotations

import cv2
import numpy as np

FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
HAPPY = FER_CLASSES.index("happy")


class FERClassifier:
    def __init__(self, session) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        self.size = 64

    def preprocess(self, images: list[np.ndarray]) -> np.ndarray:
        out = np.empty((len(images), self.size, self.size, 1), np.float32)
        for i, im in enumerate(images):
            g = im if im.ndim == 2 else cv2.cvtColor(im, cv2.COLOR_BGR2GRAY)
            interp = cv2.INTER_AREA if g.shape[0] > self.size else cv2.INTER_LINEAR
            g = cv2.resize(g, (self.size, self.size), interpolation=interp)
            out[i, ..., 0] = (g.astype(np.float32) / 255.0 - 0.5) * 2.0
        return out

    def run(self, images: list[np.ndarray], batch: int = 1) -> np.ndarray:
        """(N, 7) probabilities. The converted graph has a fixed batch of 1."""
        if not len(images):
            return np.zeros((0, len(FER_CLASSES)), np.float32)
        x = self.preprocess(list(images))
        return np.concatenate([self.session.run([self.output_name], {self.input_name: x[i:i + 1]})[0]
                               for i in range(len(x))]).astype(np.float32)

    def happy(self, images: list[np.ndarray]) -> np.ndarray:
        return self.run(images)[:, HAPPY]
