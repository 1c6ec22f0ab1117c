"""The ``audit``-related commands of the evaluation platform (thin over the library)."""

from __future__ import annotations
