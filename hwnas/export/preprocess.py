"""The bundle's input and output contract, and the preprocessing the exported graph carries.

A bundle's model takes images as an image decoder gives them: uint8, NCHW, at the size the
network's training images had (28 x 28 for Fashion-MNIST, 32 x 32 for CIFAR-10, an image
folder's images resized to its training size). Inside the graph, in the order training applies
them: scale to [0, 1] (x / 255), standardise per channel with the training set's mean and std,
resize bilinearly to the subnet's resolution (half-pixel centres, no antialiasing: torch's
`interpolate(mode="bilinear", align_corners=False)`, ONNX Resize "linear" with
"pytorch_half_pixel"), then the network. The output is one row of logits per image.

`InputContract.to_dict()` and `OutputContract.to_dict()` are the manifest's "input" and
"output" sections: everything a deployment needs without hwnas (`predict.py` reads them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import InputError

INPUT_DTYPE = "uint8"
RESIZE_METHOD = {"method": "bilinear", "coordinate_transformation": "pytorch_half_pixel (align_corners=False)",
                 "antialias": False}
# how an image of another size is brought to the input size before it enters the graph: Pillow's
# bilinear resize, which is how an image folder's training images were resized when they were read
SOURCE_RESIZE = "Pillow Image.resize((W, H), Image.BILINEAR) of the decoded image, before the graph"
TOP_K = 5


@dataclass
class InputContract:
    """What the exported graph's input is and what it does to it before the network."""

    channels: int
    size: tuple[int, int]  # (height, width) the graph takes
    resolution: int  # the subnet's input resolution (inside the graph)
    mean: list[float]
    std: list[float]
    normalised: bool = True  # False: no statistics were known (untrained export): x / 255 only
    dataset: str | None = None

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise InputError(f"expected at least one image channel, got {self.channels}", field="channels")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise InputError(f"expected {self.channels} mean and std values, got {len(self.mean)} and "
                             f"{len(self.std)}", field="mean")
        if any(not math.isfinite(s) or s <= 0 for s in self.std):
            raise InputError(f"expected positive standard deviations, got {self.std}", field="std")
        self.size = (int(self.size[0]), int(self.size[1]))

    @classmethod
    def from_dataset(cls, data: Any, resolution: int, *, stats: dict | None = None) -> InputContract:
        """The contract of a network trained on `data` (a hwnas.data.Dataset), run at `resolution`;
        `stats` (a checkpoint's "data" record) gives the mean and std training normalised with."""
        h, w = (int(d) for d in data.train_x.shape[-2:])
        stats = stats or {}
        mean = stats.get("mean") or data.mean
        std = stats.get("std") or data.std
        return cls(channels=data.in_channels, size=(h, w), resolution=int(resolution),
                   mean=[float(m) for m in mean], std=[float(s) for s in std], dataset=data.name)

    @classmethod
    def unnormalised(cls, channels: int, resolution: int) -> InputContract:
        """For a network with no training data behind it: input at its resolution, scaled to [0, 1] only."""
        return cls(channels=channels, size=(resolution, resolution), resolution=int(resolution),
                   mean=[0.0] * channels, std=[1.0] * channels, normalised=False)

    @property
    def colour_mode(self) -> str:
        """Pillow's mode for the decoded image ("L" grey, "RGB"; other channel counts have none)."""
        return {1: "L", 3: "RGB"}.get(self.channels, f"{self.channels} channels")

    def shape(self, batch: int | str = 1) -> list[int | str]:
        return [batch, self.channels, *self.size]

    def to_dict(self, *, batch: int = 1, dynamic_batch: bool = False) -> dict[str, Any]:
        h, w = self.size
        return {
            "name": "input",
            "dtype": INPUT_DTYPE,
            "layout": "NCHW",
            "shape": self.shape("N" if dynamic_batch else batch),
            "value_range": [0, 255],
            "colour_mode": self.colour_mode,
            "channel_order": {1: "grey", 3: "RGB"}.get(self.channels, "as in the training data"),
            "size": {"height": h, "width": w},
            "other_sizes": f"the graph takes {h}x{w} only: resize other images to {w}x{h} first, as "
                           f"{SOURCE_RESIZE} (predict.py does)",
            "dataset": self.dataset,
            # what the graph does, in order, before the network
            "inside_graph": [
                {"op": "scale", "multiply_by": 1 / 255},
                {"op": "standardise", "mean": self.mean, "std": self.std, "formula": "(x - mean) / std",
                 "per": "channel", "from": "the training images" if self.normalised else "none known (0 / 1)"},
                {"op": "resize", "to": [self.resolution, self.resolution], **RESIZE_METHOD,
                 "skipped_when": "the input is already that size"},
            ],
        }


@dataclass
class OutputContract:
    classes: list[str] = field(default_factory=list)

    def to_dict(self, *, batch: int = 1, dynamic_batch: bool = False) -> dict[str, Any]:
        k = len(self.classes)
        return {"name": "output", "kind": "logits", "dtype": "float32",
                "shape": ["N" if dynamic_batch else batch, k], "num_classes": k, "class_names": list(self.classes),
                "probabilities": "softmax over the last axis", "top_k": min(TOP_K, k)}


class RawImageModel(nn.Module):
    """`network` behind the input contract's preprocessing: uint8 images in, logits out."""

    input_dtype = torch.uint8

    def __init__(self, network: nn.Module, contract: InputContract):
        super().__init__()
        self.network = network
        self.contract = contract
        self.register_buffer("mean", torch.tensor(contract.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(contract.std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the order of the training pipeline: standardise at the stored size, then resize (both linear)
        x = (x.to(self.mean.dtype) / 255.0 - self.mean) / self.std  # the network's dtype (fp16 on a GPU)
        r = self.contract.resolution
        if self.contract.size != (r, r):  # the graph input is always contract.size
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
        return self.network(x)


def random_images(shape: list[int], n: int, *, seed: int) -> list[Any]:
    """`n` uint8 image batches of `shape` with every value 0-255 possible, reproducible."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=tuple(shape), dtype=np.uint8) for _ in range(n)]
