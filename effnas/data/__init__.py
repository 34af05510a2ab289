"""Image datasets held in memory as uint8 tensors and batched with tensor ops.

The search trains many small networks on CPU, so data handling must cost next to nothing per step:
every dataset is decoded once into an ``N x C x H x W`` uint8 tensor (:mod:`.core`), resized once
to the search resolution (:func:`prepare`), and batched by indexing that tensor (:class:`Batches`).

Sources (:mod:`.sources`, one module each: IDX, CIFAR-10, image folders) read real files only and
reject anything malformed with a one-line :class:`DataError` (:class:`MissingData`, naming the fixes,
when the files are not there). :func:`load_splits` ties it together: train / minival (and test, when
asked for) at one resolution, normalised with training-set statistics.
"""

from .batches import Batches
from .core import MIN_RESOLUTION, DataError, ImageDataset, MissingData, Survey, available_memory
from .registry import (DatasetConfig, Located, Source, dataset_configs, dataset_names, get_source, load_dataset, locate,
                       register)
from .sources.cifar import CIFAR10_CLASSES
from .sources.idx import FASHION_MNIST_CLASSES, IDX_FILES, IDX_SOURCES, MNIST_CLASSES, IdxSource, download_idx, read_idx
from .splits import DataSplits, TestSplit, channel_stats, load_splits, prepare, split_train_minival

__all__ = [
    "Batches", "CIFAR10_CLASSES", "DataError", "DataSplits", "DatasetConfig", "FASHION_MNIST_CLASSES",
    "IDX_FILES", "IDX_SOURCES", "IdxSource", "ImageDataset", "Located", "MIN_RESOLUTION", "MNIST_CLASSES",
    "MissingData", "Source", "Survey", "TestSplit", "available_memory", "channel_stats", "dataset_configs",
    "dataset_names", "download_idx", "get_source", "load_dataset", "load_splits", "locate", "prepare",
    "read_idx", "register", "split_train_minival",
]
