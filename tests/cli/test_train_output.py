"""What `trustlab train` prints when its output is not a terminal: a line per epoch (unless
--quiet) and the trainer's warnings as one readable line."""

from __future__ import annotations

import warnings

from typer.testing import CliRunner

from trustlab.cli import app


def test_a_line_per_epoch_unless_quiet() -> None:
    out = CliRunner().invoke(app, ["train", "--epochs", "2", "--model", "mlp"])
    assert out.exit_code == 0, out.output
    assert "epoch 1/2" in out.output and "epoch 2/2" in out.output
    out = CliRunner().invoke(app, ["train", "--epochs", "2", "--model", "mlp", "--quiet"])
    assert out.exit_code == 0 and "epoch 1/2" not in out.output


def test_training_warnings_are_one_line(monkeypatch) -> None:
    import trustlab.workflows.train as wt

    real = wt._run_fit

    def warns(*args, **kwargs):
        warnings.warn("training looks collapsed: test", UserWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(wt, "_run_fit", warns)
    out = CliRunner().invoke(app, ["train", "--epochs", "1", "--model", "mlp", "-q"])
    assert out.exit_code == 0, out.output
    assert "warning: training looks collapsed: test" in out.output
    assert "UserWarning" not in out.output
