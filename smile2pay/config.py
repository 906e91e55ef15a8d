"""Settings: the one place where environment variables are read.

Every tunable of the pipeline lives in :class:`Settings`. Environment variables
(``SMILE2PAY_*``) are read by :meth:`Settings.from_env` and nowhere else.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .vision.detect import DEFAULT_DETECTOR, get_detector

#: Where models are looked for when neither an argument nor SMILE2PAY_MODELS names a folder.
DEFAULT_MODEL_HOME = Path("~/.smile2pay/models")
#: Weights shipped inside the package (the project's own AU model); searched last.
PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "models" / "weights"


@dataclass(frozen=True)
class QualitySettings:
    """Face quality gates. Each failing gate adds a reason code to ``Face.quality.reasons``."""

    min_det_score: float = 0.5          # LOW_DET_SCORE below this
    min_interocular_px: float = 20.0    # FACE_TOO_SMALL below this (eye-centre distance, source pixels)
    max_yaw: float = 0.45               # EXTREME_POSE: |nose offset| / inter-ocular distance
    max_pitch: float = 0.45             # EXTREME_POSE: deviation of the nose height ratio from frontal
    max_roll_deg: float = 30.0          # EXTREME_POSE: eye-line angle
    min_sharpness: float = 25.0         # BLURRY: variance of Laplacian on the 112 px aligned grey crop
    min_brightness: float = 40.0        # UNDEREXPOSED: mean grey level of the aligned crop
    max_brightness: float = 215.0       # OVEREXPOSED
    max_clipped_fraction: float = 0.25  # OVER/UNDEREXPOSED: share of pixels at <=5 or >=250

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"quality setting {f.name} must be a non-negative number, got {v!r}",
                                  code="CONFIG_INVALID", setting=f.name)
        if self.min_brightness >= self.max_brightness:
            raise ConfigError("min_brightness must be below max_brightness", code="CONFIG_INVALID")


def _env_int(env, name: str, hint: str = "") -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ConfigError(f"{name} must be an integer{hint}, got {env[name]!r}") from None


def _env_flag(env, name: str) -> bool:
    v = env[name].strip().lower()
    if v not in ("0", "1", "true", "false", "on", "off"):
        raise ConfigError(f"{name} must be 1/0 (on/off), got {env[name]!r}")
    return v in ("1", "true", "on")


@dataclass(frozen=True)
class Settings:
    """All runtime settings. Build with ``Settings.from_env(**overrides)``."""

    models: str | None = None           # folder or pack name; None -> SMILE2PAY_MODELS -> ~/.smile2pay/models
    pack: str = "mobile"
    detector: str = DEFAULT_DETECTOR     # a name in smile2pay.vision.detect.DETECTORS
    #: detection sizes tried in order until a face is found (a till frame holds one large face,
    #: so the small size usually suffices); then the padded retry for faces that fill the frame.
    det_sizes: tuple[int, ...] = (320, 640)
    det_threshold: float = 0.5
    pad_retry: float = 0.5               # pad each side by this fraction of the long side when nothing is found
    min_image_side: int = 16
    max_image_pixels: int = 40_000_000
    max_file_bytes: int = 50 * 1024 * 1024
    au_backend: str = "model"            # "model" (the pack's AU network), "blendshapes" (MediaPipe teacher), "both"
    au_pad: float = 0.15                 # AU crop template padding (design card)
    au_crop_size: int = 112
    #: fuse the pack's expression classifier (FER P(happy)) into AU6 / AU12 (smile2pay.vision.au.fuse_happy); the
    #: shipped AU thresholds are calibrated with it on, so turning it off needs a calibration of its own
    au_fusion: bool = True
    #: read the identity network's smile probe on every embedded face (smile2pay.vision.smile_probe) and let the
    #: decision judge the smile on the fused scores with the probe's own thresholds (``au_probe`` in the
    #: calibration file); off: the AU stage alone (SMILE2PAY_SMILE_PROBE=0)
    smile_probe: bool = True
    flip_tta: bool = False               # identity: average the embedding of the crop and its mirror
    threads: int = 1                     # onnxruntime intra-op threads per session
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    verify_checksums: bool = True
    #: rewrite PRelu into Relu/Mul/Add before onnxruntime loads a model (smile2pay.models.graph: same function,
    #: ~1.6x faster identity embedding on CPU); off only to measure or to rule it out
    graph_rewrite: bool = True
    #: a burst detects its first frame on the whole frame, then every frame inside one window around that
    #: face, scaled so the face is about this many detector pixels (smile2pay.vision.track.Window; ~1.5 ms
    #: instead of ~5 ms a frame on one core); 0: the whole frame, every frame (the reference path)
    window_face_px: int = 64
    #: a burst's first frame is first looked at whole at this one small detector size (~1 ms on one core instead
    #: of ~5 ms at the ladder's 320); the look decides when it finds exactly one face, tall enough that a face
    #: half its height would be seen too, and no other candidate scoring even 0.2 (smile2pay.vision.track:
    #: NEAR_FACE_RATIO, SEEN_FACE_PX, FAINT_FACE_SCORE); a window that is this same look is not detected twice.
    #: Otherwise the ladder runs as before (FacePipeline.first_look). 0: the ladder always
    #: (a second face of any size the ladder sees declines the burst); ignored when ``window_face_px`` is 0
    burst_first_look: int = 128
    quality: QualitySettings = field(default_factory=QualitySettings)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "Settings":
        env = os.environ if env is None else env
        values: dict = {}
        if env.get("SMILE2PAY_MODELS"):
            values["models"] = env["SMILE2PAY_MODELS"]
        if env.get("SMILE2PAY_THREADS"):
            values["threads"] = _env_int(env, "SMILE2PAY_THREADS")
        if env.get("SMILE2PAY_AU_BACKEND"):
            values["au_backend"] = env["SMILE2PAY_AU_BACKEND"]
        if env.get("SMILE2PAY_AU_FUSION"):
            values["au_fusion"] = _env_flag(env, "SMILE2PAY_AU_FUSION")
        if env.get("SMILE2PAY_SMILE_PROBE"):
            values["smile_probe"] = _env_flag(env, "SMILE2PAY_SMILE_PROBE")
        if env.get("SMILE2PAY_GRAPH_REWRITE"):
            values["graph_rewrite"] = _env_flag(env, "SMILE2PAY_GRAPH_REWRITE")
        if env.get("SMILE2PAY_WINDOW_FACE_PX"):
            values["window_face_px"] = _env_int(env, "SMILE2PAY_WINDOW_FACE_PX", " (0: off)")
        if env.get("SMILE2PAY_BURST_FIRST_LOOK"):
            values["burst_first_look"] = _env_int(env, "SMILE2PAY_BURST_FIRST_LOOK", " (0: off)")
        if env.get("SMILE2PAY_PROVIDERS"):
            values["providers"] = tuple(p.strip() for p in env["SMILE2PAY_PROVIDERS"].split(",") if p.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        s = cls(**values)
        s.validate()
        return s

    def validate(self) -> None:
        get_detector(self.detector)      # ConfigError for a name not in the registry
        if not self.det_sizes or any((not isinstance(d, int)) or d < 32 or d % 32 for d in self.det_sizes):
            raise ConfigError(f"det_sizes must be multiples of 32 (>= 32), got {self.det_sizes!r}")
        if not (0.0 < self.det_threshold < 1.0):
            raise ConfigError(f"det_threshold must be in (0, 1), got {self.det_threshold!r}")
        if self.au_backend not in ("model", "blendshapes", "both"):
            raise ConfigError(f"au_backend must be 'model', 'blendshapes' or 'both', got {self.au_backend!r}")
        if not (0.0 <= self.au_pad <= 1.0):
            raise ConfigError(f"au_pad must be in [0, 1], got {self.au_pad!r}")
        if isinstance(self.window_face_px, bool) or not isinstance(self.window_face_px, int) \
                or not (self.window_face_px == 0 or 32 <= self.window_face_px <= 640):
            raise ConfigError(f"window_face_px must be 0 (off) or an integer in 32..640, got {self.window_face_px!r}",
                              code="CONFIG_INVALID", setting="window_face_px")
        look = self.burst_first_look
        if isinstance(look, bool) or not isinstance(look, int) or not (look == 0 or (64 <= look <= 640 and look % 32 == 0)):
            raise ConfigError(f"burst_first_look must be 0 (off) or a multiple of 32 in 64..640, got {look!r}",
                              code="CONFIG_INVALID", setting="burst_first_look")
        if self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads!r}")
        self.quality.validate()

    def model_dir_candidates(self) -> list[Path]:
        """Folders searched for weights, in order: explicit > SMILE2PAY_MODELS (via from_env) > home,
        then the weights shipped in the package."""
        out = []
        if self.models and not _looks_like_pack_name(self.models):
            out.append(Path(self.models).expanduser())
        out.append(DEFAULT_MODEL_HOME.expanduser())
        out.append(PACKAGE_WEIGHTS)
        seen: set[Path] = set()
        return [p for p in out if not (p in seen or seen.add(p))]   # each folder once, first wins

    def pack_name(self) -> str:
        if self.models and _looks_like_pack_name(self.models):
            return self.models
        return self.pack


def _looks_like_pack_name(value: str) -> bool:
    from .models.manifest import PACKS

    return value in PACKS


def data_dir(env: dict[str, str] | None = None) -> Path:
    """Folder of the evaluation data (SMILE2PAY_DATA, default ../shared/data)."""
    env = os.environ if env is None else env
    return Path(env.get("SMILE2PAY_DATA", "../shared/data")).expanduser()


#: Default cosine threshold for "same identity" in the gallery (duplicate detection at enrolment and
#: open-set identification). Deliberately strict: LFW's FAR=1e-3 point is about 0.23, but thresholds do
#: not travel between populations (a uniform studio population needed 0.46 for FAR=1e-3). Replace it
#: with a threshold calibrated on data like the deployment's (SMILE2PAY_IDENTITY_THRESHOLD).
DEFAULT_IDENTITY_THRESHOLD = 0.42


@dataclass(frozen=True)
class GallerySettings:
    """Gallery settings: the encryption key (SMILE2PAY_GALLERY_KEY: 64 hex chars or base64 of 32 bytes;
    or SMILE2PAY_GALLERY_KEY_FILE: a file holding either form or 32 raw bytes), the identity threshold
    (SMILE2PAY_IDENTITY_THRESHOLD) and the index kind for new galleries (SMILE2PAY_GALLERY_INDEX)."""

    key: bytes | None = field(default=None, repr=False)
    #: None: the calibrated, population-aware threshold (Smile2Pay.identity_operating_point); a number
    #: pins it for every identity check
    identity_threshold: float | None = None
    #: store templates unencrypted (SMILE2PAY_GALLERY_PLAINTEXT=1): only by name; the default encrypts
    #: (with the configured key, or a key generated beside a new folder gallery)
    plaintext: bool = False
    index: str = "flat"    # "flat" (exact), "hnsw" (soft-delete + rebuild) or "ivf" (IVF-PQ + exact re-rank)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, *, key_file: str | None = None,
                 **overrides) -> "GallerySettings":
        env = os.environ if env is None else env
        values: dict = {}
        if key_file or env.get("SMILE2PAY_GALLERY_KEY_FILE"):
            p = Path(key_file or env["SMILE2PAY_GALLERY_KEY_FILE"]).expanduser()
            try:
                raw = p.read_bytes()
            except OSError as e:
                raise ConfigError(f"cannot read gallery key file {p}: {e.strerror}", code="CONFIG_KEY_FILE",
                                  path=str(p))
            values["key"] = parse_gallery_key(raw)
        elif env.get("SMILE2PAY_GALLERY_KEY"):
            values["key"] = parse_gallery_key(env["SMILE2PAY_GALLERY_KEY"].encode())
        if env.get("SMILE2PAY_IDENTITY_THRESHOLD"):
            try:
                values["identity_threshold"] = float(env["SMILE2PAY_IDENTITY_THRESHOLD"])
            except ValueError:
                raise ConfigError("SMILE2PAY_IDENTITY_THRESHOLD must be a number", code="CONFIG_INVALID")
        if env.get("SMILE2PAY_GALLERY_PLAINTEXT", "").strip().lower() in ("1", "true", "yes"):
            values["plaintext"] = True
        if env.get("SMILE2PAY_GALLERY_INDEX"):
            values["index"] = env["SMILE2PAY_GALLERY_INDEX"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        s = cls(**values)
        if s.identity_threshold is not None and not (-1.0 <= s.identity_threshold <= 1.0):
            raise ConfigError(f"identity_threshold must be a cosine in [-1, 1], got {s.identity_threshold!r}")
        if s.index not in ("flat", "hnsw", "ivf"):
            raise ConfigError(f"gallery index must be 'flat', 'hnsw' or 'ivf', got {s.index!r}")
        return s


def parse_gallery_key(raw: bytes) -> bytes:
    """A 256-bit key from 32 raw bytes, 64 hex characters or base64 (standard or URL-safe)."""
    import base64
    import binascii

    if len(raw) == 32:
        return bytes(raw)
    text = raw.strip()
    try:
        if len(text) == 64:
            return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        pass
    for dec in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            key = dec(text + b"=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            continue
        if len(key) == 32:
            return key
    raise ConfigError("gallery key must be 32 bytes: 64 hex characters or base64 of 32 bytes",
                      code="CONFIG_KEY_INVALID")


def api_key_from_env(path: str | None = None, env: dict[str, str] | None = None) -> str:
    """The HTTP service's API key: from ``path`` (a file), else SMILE2PAY_API_KEY."""
    env = os.environ if env is None else env
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                key = fh.read().strip()
        except OSError as e:
            raise ConfigError(f"cannot read API key file {path}: {e.strerror}", code="CONFIG_INVALID") from None
    else:
        key = env.get("SMILE2PAY_API_KEY", "")
    if len(key) < 16:
        raise ConfigError("the server needs an API key of at least 16 characters: set SMILE2PAY_API_KEY "
                          "or pass --api-key-file", code="CONFIG_INVALID")
    return key


@dataclass(frozen=True)
class PostgresSettings:
    """The PostgreSQL gallery of a fleet (``postgresql://`` gallery URLs; docs/deployment.md).

    Environment: SMILE2PAY_PG_POOL_SIZE, SMILE2PAY_PG_MAX_STALENESS_S (how long identify / 1:1 keep
    answering from the in-memory index while PostgreSQL is unreachable), SMILE2PAY_PG_POLL_S (the change
    follower polls at least this often besides LISTEN/NOTIFY), SMILE2PAY_PG_CONNECT_TIMEOUT_S,
    SMILE2PAY_PG_RETRY_AFTER_S (the Retry-After advice of a 503), SMILE2PAY_PG_CHANGE_RETENTION_S
    (change log kept by ``compact``; a server further behind rebuilds its index), SMILE2PAY_PG_OUTAGE_VERIFY
    and SMILE2PAY_PG_SPOOL_DIR (payment verify during an outage: ``closed`` or ``local``)."""

    pool_size: int = 8
    max_staleness_s: float = 60.0
    poll_s: float = 1.0
    connect_timeout_s: float = 3.0
    retry_after_s: float = 2.0
    change_retention_s: float = 86400.0
    #: payment verify while PostgreSQL is unreachable: "closed" (default: 503, nothing decided) or
    #: "local" (for at most max_staleness_s: lockout, nonces and audit kept on this server in
    #: ``spool_dir`` and written to PostgreSQL when it is back; see docs/deployment.md)
    outage_verify: str = "closed"
    spool_dir: str = "~/.smile2pay/pg-spool"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "PostgresSettings":
        env = os.environ if env is None else env
        values: dict = {}
        for f in dataclasses.fields(cls):
            name = "SMILE2PAY_PG_" + f.name.upper()
            if env.get(name):
                if f.type in ("str", str):
                    values[f.name] = env[name]
                    continue
                try:
                    values[f.name] = int(env[name]) if f.type in ("int", int) else float(env[name])
                except ValueError:
                    raise ConfigError(f"{name} must be a number, got {env[name]!r}", code="CONFIG_INVALID")
        values.update({k: v for k, v in overrides.items() if v is not None})
        s = cls(**values)
        if s.pool_size < 1 or s.poll_s <= 0 or s.connect_timeout_s <= 0 or s.max_staleness_s < 0 \
                or s.retry_after_s <= 0 or s.change_retention_s < 0:
            raise ConfigError(f"invalid PostgreSQL settings: {s}", code="CONFIG_INVALID")
        if s.outage_verify not in ("closed", "local"):
            raise ConfigError(f"SMILE2PAY_PG_OUTAGE_VERIFY must be 'closed' or 'local', got {s.outage_verify!r}",
                              code="CONFIG_INVALID")
        return s
