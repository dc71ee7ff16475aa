"""The latent surrogate of LD-EnSF: LDNet (latent dynamics F + mesh-free reconstruction R)
with a history-aware LSTM observation encoder.

Layers: networks and encoder (:mod:`.networks`, :mod:`.encoder`), the model object
(:class:`LatentModel`, tensors in and out), tensor-level training (:func:`fit_tensors`),
files (:func:`load_model`, ``model.save``), and the xarray wrapper (:func:`fit`,
``model.forecast``).
"""

from .api import ExtrapolationWarning, fit, forecast
from .checkpoint import load_model, save_model
from .config import EncoderConfig, LDNetConfig
from .encoder import ObservationEncoder
from .latent_model import LatentModel, SurrogateMetadata
from .networks import LDNet
from .normalization import AffineNormalizer
from .training import fit_tensors

__all__ = [
    "LatentModel",
    "SurrogateMetadata",
    "LDNetConfig",
    "EncoderConfig",
    "LDNet",
    "ObservationEncoder",
    "AffineNormalizer",
    "fit_tensors",
    "fit",
    "forecast",
    "load_model",
    "save_model",
    "ExtrapolationWarning",
]
