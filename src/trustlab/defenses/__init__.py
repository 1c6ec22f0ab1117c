"""Defenses: input detectors (``detection``); backdoor and privacy defenses follow."""
