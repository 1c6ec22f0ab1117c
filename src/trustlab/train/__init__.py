"""Training: the one loop (:class:`Trainer`, :func:`fit`), checkpoints, evaluation."""

from trustlab.train.checkpoint import load_checkpoint, load_model, save_checkpoint, save_model
from trustlab.train.evaluate import evaluate, predict_logits
from trustlab.train.trainer import Callback, Trainer, TrainResult, TrainSettings, fit

__all__ = [
    "Callback",
    "TrainResult",
    "TrainSettings",
    "Trainer",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_model",
    "predict_logits",
    "save_checkpoint",
    "save_model",
]
