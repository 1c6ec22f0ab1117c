"""Attacks: evasion (adversarial examples); backdoor and privacy attacks come later."""
