"""Data stages of dpap: download (fetch + verify raw files) and preprocess (compact tensors).

Public API::

    from dpap.data import DATASETS, download, preprocess, load_processed, DataError

``download(cfg)`` and ``preprocess(cfg)`` take a :class:`dpap.config.DataConfig` and return
``<raw_dir>/<name>`` and ``<processed_dir>/<name>``; ``load_processed(dir)`` returns a
:class:`ProcessedData` (float32 x, int64 y per split, and ``meta``).
"""

from dpap.data.errors import DataError
from dpap.data.registry import DATASETS, DatasetSpec, get_spec
from dpap.data.download import download, raw_root
from dpap.data.preprocess import preprocess, processed_root
from dpap.data.processed import ProcessedData, load_processed

__all__ = [
    "DATASETS",
    "DataError",
    "DatasetSpec",
    "ProcessedData",
    "download",
    "get_spec",
    "load_processed",
    "preprocess",
    "processed_root",
    "raw_root",
]
