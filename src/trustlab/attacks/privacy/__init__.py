"""Privacy attacks: membership inference (threshold attacks, Shokri et al.'s shadow models,
LiRA, RMIA, label-only attacks), with shadow models trained by the one training loop and cached
in the results store.

Each attack registers itself in :data:`~trustlab.registry.PRIVACY_ATTACKS` where it is defined
(``loss``, ``confidence``, ``entropy``, ``shokri``, ``lira``, ``rmia``, ``label-only``,
``label-only-hsj``, ``label-only-augment``), with meta ``shadows`` and a scoring hook
``audit`` (:mod:`trustlab.attacks.privacy.audit`); importing this package registers them all.

Scores are higher for likely members; :func:`trustlab.metrics.privacy.membership_metrics` turns
them into AUC, TPR at 1% / 0.1% FPR and the membership advantage.
"""

# isort: off
# the catalogue lists the attacks in the order their modules are first imported here
from trustlab.attacks.privacy import membership, lira, rmia, label_only  # noqa: F401

# isort: on
from trustlab.attacks.privacy.audit import MembershipAudit, shadow_summary, train_plus_test
from trustlab.attacks.privacy.label_only import (
    LabelOracle,
    gap_scores,
    label_augment_scores,
    label_boundary_scores,
    label_noise_counts,
    label_noise_scores,
)
from trustlab.attacks.privacy.lira import LiRA, lira_scores, query_phi
from trustlab.attacks.privacy.membership import (
    ShokriAttack,
    confidence_scores,
    entropy_scores,
    logit_confidence,
    loss_scores,
)
from trustlab.attacks.privacy.reference import ReferenceAttack
from trustlab.attacks.privacy.rmia import RMIA, rmia_scores, tune_offline_a
from trustlab.attacks.privacy.shadows import (
    ShadowModels,
    ShadowRecipe,
    dataset_fingerprint,
    membership_masks,
    train_shadows,
)

__all__ = [
    "RMIA",
    "LabelOracle",
    "LiRA",
    "MembershipAudit",
    "ReferenceAttack",
    "ShadowModels",
    "ShadowRecipe",
    "ShokriAttack",
    "confidence_scores",
    "entropy_scores",
    "dataset_fingerprint",
    "gap_scores",
    "label_augment_scores",
    "label_boundary_scores",
    "label_noise_counts",
    "label_noise_scores",
    "lira_scores",
    "logit_confidence",
    "loss_scores",
    "membership_masks",
    "query_phi",
    "rmia_scores",
    "shadow_summary",
    "train_plus_test",
    "train_shadows",
    "tune_offline_a",
]
