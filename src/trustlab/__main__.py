"""``python -m trustlab`` (also what ``torchrun -m trustlab`` runs)."""

from trustlab.cli import main

main()
