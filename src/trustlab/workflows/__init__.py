"""Workflows: the library functions behind the commands that store a run.

Each takes plain arguments, validates them before anything is stored, records its run in the
results store (:mod:`trustlab.results`) and returns ``(run, result)``; the CLI is a thin layer
over them, and a Python user calls the same functions:

- :func:`~trustlab.workflows.train.run_training` (``trustlab train``),
  :func:`~trustlab.workflows.train.resume_training` (``trustlab resume``);
- :func:`~trustlab.workflows.backdoor.run_backdoor` (``trustlab backdoor``) and
  :func:`~trustlab.workflows.defend.run_defend` (``trustlab defend``);
- :func:`~trustlab.workflows.evasion.run_attack`, ``run_evaluate``, ``run_advcam`` and
  ``run_detect`` (``trustlab attack``, ``evaluate``, ``advcam``, ``detect``);
- :func:`~trustlab.workflows.transfer.run_transfer` (``trustlab transfer``);
- :func:`~trustlab.workflows.mia.run_mia` (``trustlab mia``);
- :func:`~trustlab.workflows.privacy_defense.run_privacy_defense` (``trustlab defend-privacy``);
- :func:`~trustlab.workflows.inpaint.run_inpaint`, ``resume_inpaint`` and ``evaluate_inpaint``
  (``trustlab inpaint train``, ``trustlab resume``, ``trustlab inpaint eval``);
- :func:`~trustlab.workflows.audit.run_audit` (``trustlab audit``), over
  :func:`~trustlab.workflows.audit.audit`, which audits any ``nn.Module`` from Python and
  returns a :class:`~trustlab.workflows.audit.Scorecard` without storing a run (also
  ``trustlab.audit``); :func:`~trustlab.workflows.audit.scorecard_html` makes its page.

:mod:`~trustlab.workflows.targets` turns what a user names on the command line (a run id or a
model file) into a model and its test data (``load_target``, ``load_target_model``).

Workflows sit above attacks, defenses and training and below the reproductions
(:mod:`trustlab.experiments`) and the CLI.
"""
