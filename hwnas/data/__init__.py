"""Datasets: the shipped Fashion-MNIST subset by default; real datasets from a local path.

`load_dataset(spec)` takes:
  None or "fmnist-subset"      the stratified 10k/2k Fashion-MNIST subset shipped in the package
  "fashion-mnist[:DIR]"        the full Fashion-MNIST (idx files; default DIR from Debian's
                               dataset-fashion-mnist: /usr/share/datasets/fashion-mnist)
  "cifar10:DIR"                CIFAR-10 in its python pickle format (cifar-10-batches-py)
  "folder:DIR"                 an image folder, one sub-folder per class (DIR/train and DIR/test
                               when present, otherwise a stratified 80/20 split)
"""

from hwnas.data.datasets import DATASET_KINDS, Dataset, load_dataset

__all__ = ["DATASET_KINDS", "Dataset", "load_dataset"]
