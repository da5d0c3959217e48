"""`tools/bench_accuracy_predictor.py --from-pairs`: the predictor fitted on exported pairs, no checkpoint."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from hwnas.space import get_space

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "bench_accuracy_predictor.py"


def _pairs_file(path: Path, n_train: int, n_test: int, extra: int, seed: int = 1) -> Path:
    """A pairs file as --export-pairs writes it; accuracy a known function of the subnet (its log MACs)."""
    space = get_space("mbv3-small-input")
    rng = np.random.default_rng(seed)
    archs, seen = [], set()
    while len(archs) < n_train + n_test + extra:
        a = space.sample(rng)
        key = tuple(space.encode(a).tolist())
        if key not in seen:
            seen.add(key)
            archs.append(a)
    acc = [80.0 + float(np.log(space.flops(a))) for a in archs]
    row = [{"x": space.encode(a).tolist(), "acc": y, "loss": 0.5} for a, y in zip(archs, acc, strict=True)]
    held = slice(n_train, n_train + n_test)
    doc = {"format": "hwnas-accuracy-pairs", "space": space.name,
           "space_config": {k: v for k, v in space.config().items() if k != "name"},
           "seed": seed, "n_train": n_train, "n_test": n_test, "split": "heldout", "val_images": 10000,
           "recal_images": 2048, "recal_seed": 0, "checkpoint": {}, "measured_on": {},
           "held_out": row[held], "pairs": row[:n_train] + row[held.stop:]}
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_from_pairs_fits_and_scores_the_held_out_subnets(tmp_path):
    path = _pairs_file(tmp_path / "pairs.json.gz", n_train=60, n_test=30, extra=40)
    proc = _run("--from-pairs", str(path), "--predictor", "mlp", "--curve", "50")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n_train"] == 100 and result["n_test"] == 30
    # a smooth function of the subnet's MACs, which the features hold: ranked well
    assert result["predictor_held_out"]["kendall_tau"] > 0.6
    assert set(result["curve"]) == {"50"}


def test_from_pairs_missing_held_out_subnet_is_an_error(tmp_path):
    path = _pairs_file(tmp_path / "pairs.json.gz", n_train=20, n_test=10, extra=0)
    doc = json.loads(gzip.decompress(path.read_bytes()))
    doc["held_out"] = doc["held_out"][1:]
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))
    proc = _run("--from-pairs", str(path))
    assert proc.returncode == 2
    assert "1 of the 10 held-out subnets have no measurement" in proc.stderr


def test_from_pairs_foreign_file_is_an_error(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"format": "something-else"}))
    proc = _run("--from-pairs", str(path))
    assert proc.returncode == 2
    assert "not a pairs file written by --export-pairs" in proc.stderr


def _tiny_checkpoint(path: Path, acc_largest: float) -> Path:
    import torch

    from hwnas.supernet import build_supernet
    from hwnas.train.checkpoint import save_checkpoint
    from hwnas.train.trainer import TrainSettings

    tiny = {"width_mult": 0.25, "resolutions": [8, 12]}
    space = get_space("mbv3-small-input", **tiny)
    torch.manual_seed(0)
    settings = TrainSettings(space_options=tiny, val_size=40)
    save_checkpoint(path, {"space": space.name,
                           "space_config": {k: v for k, v in space.config().items() if k != "name"},
                           "model": build_supernet(space).state_dict(), "settings": vars(settings), "epoch": 1,
                           "history": [{"epoch": 1, "acc_largest": acc_largest, "acc_smallest": 10.0}]})
    return path


def test_exported_pairs_of_the_same_checkpoint_are_not_measured_again(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path / "s.pt", acc_largest=12.5)
    common = ("--checkpoint", str(ckpt), "--eval-set", "val", "--n-train", "4", "--n-test", "3",
              "--extra-train", "2", "--recal-batches", "1", "--predictor", "mlp")
    first = _run(*common, "--pairs", str(tmp_path / "a.json"), "--export-pairs", str(tmp_path / "a.json.gz"))
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["seconds"]["measured_now"] == 9
    exported = json.loads(gzip.decompress((tmp_path / "a.json.gz").read_bytes()))
    assert len(exported["pairs"]) == 6 and len(exported["held_out"]) == 3

    # a fresh pairs file seeded from the export: every subnet, held-out ones included, is known
    again = _run(*common, "--pairs", str(tmp_path / "b.json"), "--also-pairs", str(tmp_path / "a.json.gz"))
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["seconds"]["measured_now"] == 0 and result["n_train"] == 6
    assert result["predictor_held_out"] == json.loads(first.stdout)["predictor_held_out"]

    # pairs of another supernet (its training figures differ) are refused, nothing measured
    other = _tiny_checkpoint(tmp_path / "other.pt", acc_largest=13.0)
    refused = _run(*common[:1], str(other), *common[2:], "--pairs", str(tmp_path / "c.json"),
                   "--also-pairs", str(tmp_path / "a.json.gz"))
    assert refused.returncode == 2
    assert "measured on a supernet" in refused.stderr and "a.json.gz" in refused.stderr
    assert not (tmp_path / "c.json").exists()


def test_kernel_grid_flags_restrict_what_the_cross_validation_chooses_from(tmp_path):
    path = _pairs_file(tmp_path / "pairs.json.gz", n_train=60, n_test=30, extra=20)
    proc = _run("--from-pairs", str(path), "--kernel-ell", "0.7,1.0", "--kernel-lin", "1")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    # 2 length scales x the default grid's 4 noises x 1 linear weight, every one scored by the CV
    assert sorted(result["kernel_cv_kendall_tau"]) == sorted(
        f"{ell},{noise},1.0" for ell in (0.7, 1.0) for noise in (0.03, 0.1, 0.3, 1.0))
    assert result["predictor_kernel"]["ell"] in (0.7, 1.0) and result["predictor_kernel"]["lin"] == 1.0
    assert result["predictor_held_out"]["kendall_tau"] > 0.6

    bad = _run("--from-pairs", str(path), "--kernel-noise", "0.1,-1")
    assert bad.returncode == 2 and "--kernel-noise" in bad.stderr and "> 0" in bad.stderr
