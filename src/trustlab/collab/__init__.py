"""Collaborative learning: FDPDDL parties, protocol and backends."""
