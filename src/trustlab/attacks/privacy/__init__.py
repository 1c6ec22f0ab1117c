"""Privacy attacks: membership inference (threshold attacks, Shokri et al.'s shadow models,
LiRA), with shadow models trained by the one training loop and cached in the results store.

Each attack registers itself in :data:`~trustlab.registry.PRIVACY_ATTACKS` where it is defined
(``loss``, ``confidence``, ``shokri``, ``lira``), with meta ``shadows`` and a scoring hook
``audit`` (:mod:`trustlab.attacks.privacy.audit`); importing this package registers them all.

Scores are higher for likely members; :func:`trustlab.metrics.privacy.membership_metrics` turns
them into AUC, TPR at 1% / 0.1% FPR and the membership advantage.
"""

from trustlab.attacks.privacy.audit import MembershipAudit, shadow_summary, train_plus_test
from trustlab.attacks.privacy.lira import LiRA, lira_scores, query_phi
from trustlab.attacks.privacy.membership import (
    ShokriAttack,
    confidence_scores,
    entropy_scores,
    logit_confidence,
    loss_scores,
)
from trustlab.attacks.privacy.shadows import (
    ShadowModels,
    ShadowRecipe,
    dataset_fingerprint,
    membership_masks,
    train_shadows,
)

__all__ = [
    "LiRA",
    "MembershipAudit",
    "ShadowModels",
    "ShadowRecipe",
    "ShokriAttack",
    "confidence_scores",
    "entropy_scores",
    "dataset_fingerprint",
    "lira_scores",
    "logit_confidence",
    "loss_scores",
    "membership_masks",
    "query_phi",
    "shadow_summary",
    "train_plus_test",
    "train_shadows",
]
