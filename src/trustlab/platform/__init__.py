"""The evaluation platform: versioned benchmarks, sandboxed evaluation of submissions, and the
static leaderboard site built from the results store.

It sits above the reproductions (it reads their stored results) and below the CLI.
"""
