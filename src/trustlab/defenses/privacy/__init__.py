"""Privacy defenses: the JEM membership-inference defense (:mod:`trustlab.defenses.privacy.jem`).

Each defense registers itself in :data:`~trustlab.registry.PRIVACY_DEFENSES` where it is defined
(``jem``; meta ``settings``: its validated settings model); importing this package registers
them all.
"""

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
