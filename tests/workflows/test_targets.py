"""A run reference: an id (int or text) or a model file path."""

from __future__ import annotations

from trustlab.workflows.targets import is_run_ref


def test_run_ids_as_int_or_text_and_paths() -> None:
    assert is_run_ref(3) and is_run_ref("3") and is_run_ref("run-000003")
    assert not is_run_ref("runs/model.safetensors") and not is_run_ref("model.safetensors")
