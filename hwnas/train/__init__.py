"""Supernet training (sandwich rule, in-place distillation, progressive shrinking; torchrun/DDP).

    from hwnas.train import TrainSettings, train, load_checkpoint
    summary = train(TrainSettings(space="mbv3-small-input", epochs=3), "supernet.pt")
    supernet, meta = load_checkpoint("supernet.pt")
"""

from hwnas.train.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint, space_from_meta
from hwnas.train.evaluation import accuracy, evaluate_subnet, recalibration_batches
from hwnas.train.splits import split_validation
from hwnas.train.trainer import TrainSettings, sandwich_archs, sandwich_step, train

__all__ = [
    "TrainSettings",
    "accuracy",
    "evaluate_subnet",
    "load_checkpoint",
    "read_checkpoint",
    "recalibration_batches",
    "sandwich_archs",
    "sandwich_step",
    "save_checkpoint",
    "space_from_meta",
    "split_validation",
    "train",
]


from hwnas.verb_module import make_verb  # noqa: E402

make_verb(__name__, "hwnas.pipeline:train")  # hwnas.train(...) is the library verb
