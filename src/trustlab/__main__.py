"""``python -m trustlab`` (also what ``torchrun -m trustlab`` runs)."""

from trustlab.cli import main

if __name__ == "__main__":  # guarded: worker processes (spawn) re-import this module
    main()
