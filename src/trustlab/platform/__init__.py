"""The evaluation platform: versioned benchmarks, sandboxed evaluation of submissions, and the
static leaderboard site built from the results store.

It sits above the reproductions (it reads their stored results) and below the CLI.
"""

from trustlab.platform.benchmarks import BENCHMARKS, Benchmark, Metric, get_benchmark
from trustlab.platform.leaderboard import build_site, serve
from trustlab.platform.sandbox import SandboxOutcome, run_sandboxed
from trustlab.platform.submissions import SubmissionResult, submit

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "Metric",
    "SandboxOutcome",
    "SubmissionResult",
    "build_site",
    "get_benchmark",
    "run_sandboxed",
    "serve",
    "submit",
]
