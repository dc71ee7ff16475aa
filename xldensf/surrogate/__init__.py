"""The latent surrogate of LD-EnSF: LDNet (latent dynamics F + mesh-free reconstruction R)
with a history-aware LSTM observation encoder.

Layers: networks and encoder (:mod:`.networks`, :mod:`.encoder`), the fast decoder at
points (:mod:`.decoder`), the model object (:class:`LatentModel` in :mod:`.model`, tensors
in and out, with its file format: ``model.save``, :func:`load_model`), tensor-level
training (:func:`fit_tensors`, resumable via :mod:`.checkpoint`), and the xarray wrappers
(:func:`fit` in :mod:`.fit`, :func:`forecast` / ``model.forecast`` in :mod:`.dataset`).
The coupled VAE of Latent-EnSF: :class:`CoupledVAE` (:mod:`.vae_networks`), :class:`VAEModel`
and :func:`fit_vae` (:mod:`.vae`).
"""

from ..errors import ExtrapolationWarning
from .config import EncoderConfig, LDNetConfig
from .dataset import forecast
from .decoder import DecoderAtPoints
from .encoder import ObservationEncoder
from .fit import fit
from .metadata import SurrogateMetadata
from .model import LatentModel, load_model, save_model
from .networks import LDNet
from .normalization import AffineNormalizer
from .training import fit_tensors
from .vae import VAEMetadata, VAEModel, fit_vae
from .vae_networks import CoupledVAE

__all__ = [
    "LatentModel",
    "SurrogateMetadata",
    "DecoderAtPoints",
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
    "VAEModel",
    "VAEMetadata",
    "CoupledVAE",
    "fit_vae",
]
