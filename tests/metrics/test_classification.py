"""Classification metrics computed by hand."""

from __future__ import annotations

import pytest
import torch

from trustlab.metrics import accuracy, confusion_matrix, num_correct


def test_accuracy_from_logits_and_predictions() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0], [0.2, 0.1]])
    y = torch.tensor([0, 1, 1, 1])
    assert num_correct(logits, y) == 2
    assert accuracy(logits, y) == 0.5
    assert accuracy(torch.tensor([0, 1, 1, 1]), y) == 1.0
    with pytest.raises(ValueError):
        accuracy(logits[:0], y[:0])
    with pytest.raises(ValueError):
        accuracy(logits, y[:2])


def test_confusion_matrix() -> None:
    pred = torch.tensor([0, 1, 1, 2, 2, 2])
    y = torch.tensor([0, 1, 2, 2, 2, 0])
    cm = confusion_matrix(pred, y, 3)
    assert cm.tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 2]]
    assert int(cm.sum()) == 6 and int(cm.trace()) == num_correct(pred, y)
