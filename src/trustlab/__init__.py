"""trustlab: attack, defend and measure deep-learning models on every axis of trust.

The short public API; everything else lives in the sub-packages (``trustlab.data``,
``trustlab.models``, ``trustlab.train``, ``trustlab.results``, ...).
"""

from trustlab.data import ArrayDataset, load_dataset
from trustlab.errors import InputError
from trustlab.models import Normalized, create_model, feature_taps
from trustlab.results import RunStore
from trustlab.train import Trainer, TrainSettings, evaluate, fit, load_model, save_model

__version__ = "0.1.0"

__all__ = [
    "ArrayDataset",
    "InputError",
    "Normalized",
    "RunStore",
    "TrainSettings",
    "Trainer",
    "create_model",
    "evaluate",
    "feature_taps",
    "fit",
    "load_dataset",
    "load_model",
    "save_model",
]
