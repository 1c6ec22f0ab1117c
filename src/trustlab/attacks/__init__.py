"""Attacks: evasion (adversarial examples), backdoor (poisoning, triggers, compromised losses) and
privacy (membership inference: threshold, Shokri shadow models, LiRA)."""
