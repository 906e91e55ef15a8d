"""smile2pay: approve a payment when the enrolled person smiles (identity AND AU6+AU12)."""
from .config import Settings
from .errors import (ConfigError, FaceError, GalleryError, ImageError, ModelError, RequestError, RuleError,
                     Smile2PayError)
from .types import Decision, Face, Quality

__version__ = "0.1.0"

__all__ = ["Smile2Pay", "Settings", "Face", "Quality", "Decision", "Smile2PayError", "ImageError", "ModelError", "ConfigError",
           "GalleryError", "RuleError", "RequestError", "FaceError", "FacePipeline", "PaymentAttempt", "__version__"]


def __getattr__(name):  # lazy: importing the package does not load onnxruntime
    if name == "FacePipeline":
        from .pipeline import FacePipeline

        return FacePipeline
    if name == "Smile2Pay":
        from .api import Smile2Pay

        return Smile2Pay
    if name == "PaymentAttempt":
        from .attempt import PaymentAttempt

        return PaymentAttempt
    raise AttributeError(name)
