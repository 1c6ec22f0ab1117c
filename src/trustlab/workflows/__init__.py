"""Workflows: the library functions behind the commands that store a run.

Each takes plain arguments, validates them before anything is stored, records its run in the
results store (:mod:`trustlab.results`) and returns ``(run, result)``; the CLI is a thin layer
over them, and a Python user calls the same functions:

- :func:`~trustlab.workflows.train.run_training` (``trustlab train``),
  :func:`~trustlab.workflows.train.resume_training` (``trustlab resume``);
- :func:`~trustlab.workflows.mia.run_mia` (``trustlab mia``);
- :func:`~trustlab.workflows.privacy_defense.run_privacy_defense` (``trustlab defend-privacy``).

Workflows sit above attacks, defenses and training and below the reproductions
(:mod:`trustlab.experiments`) and the CLI.
"""
