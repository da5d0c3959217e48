"""Datasets: the shipped Fashion-MNIST subset by default; real datasets from a local path.

`load_dataset(spec)` takes:
  None or "fmnist-subset"      the stratified 10k/2k Fashion-MNIST subset shipped in the package
  "fashion-mnist[:DIR]"        the full Fashion-MNIST (idx files; default DIR from Debian's
                               dataset-fashion-mnist: /usr/share/datasets/fashion-mnist)
  "cifar10:DIR"                CIFAR-10 in its python pickle format (cifar-10-batches-py)
  "folder:DIR"                 an image folder, one sub-folder per class (DIR/train and DIR/test
                               when present, otherwise a stratified 80/20 split)

`load_dataset` holds every image in memory (an image folder's resized to one small size);
`open_dataset(spec)` is what training reads: the same, except that an image folder is streamed
from its files (`hwnas.data.stream`: decoded and augmented per batch by DataLoader workers).
"""

from hwnas.data.datasets import DATASET_KINDS, Dataset, load_dataset
from hwnas.data.stream import StreamDataset, open_dataset

__all__ = ["DATASET_KINDS", "Dataset", "StreamDataset", "load_dataset", "open_dataset"]
