"""Supernet checkpoints: a dict of plain tensors, strings and numbers, read with weights_only=True.

Layout (schema_version 1):
  format            "hwnas-supernet"
  schema_version    1
  space             registered space name
  space_config      the space's options (`get_space(space, **space_config)` rebuilds it)
  model             the supernet's state_dict
  optimizer         the optimizer's state_dict (absent in an exported, weights-only checkpoint)
  settings          the training settings (a plain dict, see TrainSettings)
  epoch             epochs completed
  step              optimizer steps completed
  history           per-epoch records: epoch, loss, seconds, acc_largest, acc_smallest, ...
  position          batches of epoch `epoch` (0-based) already taken: > 0 in a mid-epoch checkpoint
  partial_epoch     that epoch's losses, images seen, skipped files and seconds so far
  step_losses       every optimizer step's loss, in order
  rng               the global torch, CUDA, numpy and python RNG states
  data              dataset spec, validation split, and the per-channel mean and std inputs were
                    normalised with (an export's manifest takes them from here)
  skipped_images    unreadable images passed over in training so far
  grad_scaler       the float16 loss scaler's state (CUDA without bfloat16 only)
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from hwnas.errors import InputError
from hwnas.io import write_or_rescue

CHECKPOINT_FORMAT = "hwnas-supernet"
SCHEMA_VERSION = 1
REQUIRED_KEYS = {"space": str, "space_config": dict, "model": dict, "settings": dict, "epoch": int,
                 "history": list}


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically (a reader sees the previous file or the new one)."""
    payload = {"format": CHECKPOINT_FORMAT, "schema_version": SCHEMA_VERSION, **payload}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_or_rescue(path, buffer.getvalue(), what="supernet checkpoint")


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict; a missing, corrupt or foreign file is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError("supernet checkpoint not found (train one with `hwnas train`)", path=str(path))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decode failure means a corrupt or foreign file
        raise InputError(f"not a readable supernet checkpoint ({type(exc).__name__}: {exc}); "
                         "expected a file written by `hwnas train`", path=str(path)) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"not an hwnas supernet checkpoint (expected format '{CHECKPOINT_FORMAT}')",
                         path=str(path), field="format")
    if ckpt.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"unsupported schema_version {ckpt.get('schema_version')!r}; "
                         f"this hwnas reads {SCHEMA_VERSION}", path=str(path), field="schema_version")
    for key, kind in REQUIRED_KEYS.items():
        if not isinstance(ckpt.get(key), kind):
            raise InputError(f"missing or not a {kind.__name__}", path=str(path), field=key)
    return ckpt


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(supernet, meta): the trained supernet (eval mode) and the checkpoint's plain metadata.

    `meta` holds space, space_config, settings, epoch, step, history and the last accuracies;
    `space_from_meta(meta)` rebuilds the search space.
    """
    from hwnas.supernet import build_supernet

    ckpt = read_checkpoint(path)
    space = space_from_meta(ckpt, path=path)
    supernet = build_supernet(space)
    try:
        supernet.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise InputError(f"weights do not fit space '{ckpt['space']}' with {ckpt['space_config']}: {exc}",
                         path=str(path), field="model") from exc
    supernet.to(device).eval()
    return supernet, checkpoint_meta(ckpt)


def checkpoint_meta(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Everything but the tensors: JSON-able."""
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer")}
    last = ckpt["history"][-1] if ckpt["history"] else {}
    for key in ("acc_largest", "acc_smallest"):
        if key in last:
            meta.setdefault(key, last[key])
    return meta


def space_from_meta(meta: dict[str, Any], path: str | os.PathLike | None = None):
    """The search space a checkpoint was trained on."""
    from hwnas.space import get_space

    try:
        return get_space(meta["space"], **meta["space_config"])
    except InputError as exc:
        raise InputError(f"checkpoint's space: {exc}", path=str(path) if path else None,
                         field="space") from exc
    except TypeError as exc:
        raise InputError(f"checkpoint's space_config does not fit space '{meta['space']}': {exc}",
                         path=str(path) if path else None, field="space_config") from exc
