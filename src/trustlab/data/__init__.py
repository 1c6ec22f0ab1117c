"""Datasets: built-in offline sets, real-data file formats, label noise and party partitions."""

from trustlab.data import files, photos, synthetic  # noqa: F401  (register the datasets)
from trustlab.data.datasets import SPLITS, ArrayDataset, as_array_dataset, load_dataset

__all__ = ["SPLITS", "ArrayDataset", "as_array_dataset", "load_dataset"]
