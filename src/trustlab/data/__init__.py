"""Datasets: built-in offline sets, real-data file formats, label noise and party partitions."""

from trustlab.data import files  # noqa: F401  (registers the real-data formats)
from trustlab.data.datasets import SPLITS, ArrayDataset, as_array_dataset, load_dataset

__all__ = ["SPLITS", "ArrayDataset", "as_array_dataset", "load_dataset"]
