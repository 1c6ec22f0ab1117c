"""Privacy defenses: the JEM membership-inference defense (:mod:`trustlab.defenses.privacy.jem`)."""

from trustlab.defenses.privacy.jem import (
    FINETUNE,
    RETRAIN,
    JEMDefense,
    JEMLoss,
    JEMReport,
    JEMResult,
    JEMSettings,
    SGLDSampler,
    energy,
    sample_synthetic,
)

__all__ = [
    "FINETUNE",
    "RETRAIN",
    "JEMDefense",
    "JEMLoss",
    "JEMReport",
    "JEMResult",
    "JEMSettings",
    "SGLDSampler",
    "energy",
    "sample_synthetic",
]
