"""kill -9 at random moments: `hwnas profile`, supernet training and `hwnas export` are killed
at 5 random points each and rerun. After every kill the artifact on disk is whole (or absent); after
every rerun it is complete and nothing is left beside it (no temporary file, partial folder or lock);
a resumed profile holds the same op keys as an uninterrupted one.

Each moment is drawn uniformly over the first 80 % of the child's writing phase (from when it takes the
artifact's lock to its exit, timed on one uninterrupted run first).
`HWNAS_KILL_SEED` draws other moments, `HWNAS_KILL_POINTS` kills at more of them. Each test prints
its counts (run with -s to see them).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_latency_profile import PROFILE_YAML, TINY
from test_reliability import SMALLEST, child_env, hidden_entries, spawn, spawn_tiny_profile
from test_train import TINY as TINY_SPACE
from test_train import tiny_data, tiny_settings

from hwnas.cli import main as cli_main
from hwnas.io import file_sha256
from hwnas.latency.profile import profile
from hwnas.latency.table import LatencyTable
from hwnas.train import read_checkpoint, train

POINTS = int(os.environ.get("HWNAS_KILL_POINTS", "5"))
SEED = int(os.environ.get("HWNAS_KILL_SEED", "0"))
TESTS = Path(__file__).resolve().parent


def kill_after(child: subprocess.Popen, lock: Path, delay: float) -> bool:
    """SIGKILL `child` `delay` seconds after it took the artifact's `lock` (its writing phase began);
    whether it was still running then."""
    while not lock.exists() and child.poll() is None:
        time.sleep(0.005)
    deadline = time.time() + delay
    while time.time() < deadline and child.poll() is None:
        time.sleep(0.005)
    alive = child.poll() is None
    if alive:
        os.kill(child.pid, signal.SIGKILL)
    child.communicate(timeout=60)
    return alive


def writing_phase(child: subprocess.Popen, lock: Path) -> float:
    """Seconds from when `child` takes `lock` to its exit, uninterrupted: the span the kill moments are
    drawn from (a fixed span would fall after the end on a fast machine and before the start on a slow
    one)."""
    while not lock.exists() and child.poll() is None:
        time.sleep(0.005)
    start = time.time()
    child.communicate(timeout=600)
    assert child.returncode == 0, "the uninterrupted run failed"
    return time.time() - start


def report(name: str, counts: dict) -> None:
    print(f"\nkill test {name}: {json.dumps(counts)}")


def test_profile_killed_at_random_moments_resumes_to_the_uninterrupted_op_keys(tmp_path):
    n_ops = 16
    fast = tmp_path / "fast.yaml"
    fast.write_text(PROFILE_YAML.format(name="fast-ort", rounds=1))
    reference = tmp_path / "reference" / "t.json"
    profile(fast, TINY, reference, space_options={"n_ops": n_ops}, progress=False)
    expected = set(LatencyTable.load(reference).keys())
    rng = random.Random(SEED)
    timing = tmp_path / "timing"
    timing.mkdir()
    span = 0.8 * writing_phase(spawn_tiny_profile([str(fast), "--space", TINY, "--out", str(timing / "t.json"),
                                                   "--no-progress"], n_ops=n_ops), timing / ".t.json.lock")
    counts = {"kills": 0, "table_on_disk_after_kill": 0, "leftovers_after_kill": 0, "leftovers_after_rerun": 0}
    for point in range(POINTS):
        folder = tmp_path / f"point{point}"
        folder.mkdir()
        out = folder / "t.json"
        child = spawn_tiny_profile([str(fast), "--space", TINY, "--out", str(out), "--no-progress"], n_ops=n_ops)
        counts["kills"] += kill_after(child, folder / ".t.json.lock", rng.uniform(0.0, span))
        if out.exists():  # written atomically: a kill never leaves half a table
            counts["table_on_disk_after_kill"] += 1
            assert set(LatencyTable.load(out).keys()) <= expected
        counts["leftovers_after_kill"] += len(hidden_entries(folder))
        result = profile(fast, TINY, out, resume=True, space_options={"n_ops": n_ops}, progress=False)
        assert result["complete"] and set(LatencyTable.load(out).keys()) == expected
        counts["leftovers_after_rerun"] += len(hidden_entries(folder))
        assert hidden_entries(folder) == []
    report("profile", counts)
    assert counts["kills"] >= POINTS - 1  # the moments fall within the run


TRAIN_CHILD = """
import sys
from pathlib import Path
from test_train import tiny_data, tiny_settings
from hwnas.train import train
train(tiny_settings(epochs={epochs}, limit_train=96), Path(sys.argv[1]), resume=True, device="cpu", progress=False,
      dataset=tiny_data(n_train=256, n_test=64))
"""


def test_training_killed_at_random_moments_never_leaves_half_a_checkpoint(tmp_path):
    epochs = 3
    rng = random.Random(SEED + 1)

    def start(out: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", TRAIN_CHILD.format(epochs=epochs), str(out)], cwd=TESTS,
                                env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    (tmp_path / "timing").mkdir()
    span = 0.8 * writing_phase(start(tmp_path / "timing" / "c.pt"), tmp_path / "timing" / ".c.pt.lock")
    counts = {"kills": 0, "checkpoint_on_disk_after_kill": 0, "leftovers_after_kill": 0, "leftovers_after_rerun": 0}
    for point in range(POINTS):
        folder = tmp_path / f"point{point}"
        folder.mkdir()
        out = folder / "c.pt"
        counts["kills"] += kill_after(start(out), folder / ".c.pt.lock", rng.uniform(0.0, span))
        if out.exists():  # written atomically: whole, with the epochs it says
            counts["checkpoint_on_disk_after_kill"] += 1
            assert 1 <= read_checkpoint(out)["epoch"] <= epochs
        counts["leftovers_after_kill"] += len(hidden_entries(folder))
        result = train(tiny_settings(epochs=epochs, limit_train=96), out, resume=True, device="cpu",
                       progress=False, dataset=tiny_data(n_train=256, n_test=64))
        assert read_checkpoint(out)["epoch"] == epochs and result["epochs"] == epochs
        counts["leftovers_after_rerun"] += len(hidden_entries(folder))
        assert hidden_entries(folder) == []
    report("train", counts)
    assert counts["kills"] >= POINTS - 1


def test_training_killed_mid_epoch_resumes_with_the_uninterrupted_losses(tmp_path, capsys):
    """kill -9 between two mid-epoch checkpoints of `hwnas train` on an image folder (one corrupt JPEG
    in it); `hwnas train --resume` then takes exactly the steps, and losses, of an uninterrupted run."""
    from test_stream import make_image_folder

    folder = make_image_folder(tmp_path / "images", per_class=16, bad=1)
    argv = ["train", "--space", "mbv3-small-input", "--space-options", json.dumps(TINY_SPACE), "--data",
            f"folder:{folder}", "--epochs", "1", "--batch-size", "6", "--val-size", "0", "--num-random", "1",
            "--threads", "1", "--workers", "1", "--checkpoint-every", "1", "--no-progress", "--json"]
    assert cli_main([*argv, "--out", str(tmp_path / "whole.pt")]) == 0  # uninterrupted, in this process
    assert json.loads(capsys.readouterr().out)["skipped_images"] == 1  # the corrupt JPEG
    reference = read_checkpoint(tmp_path / "whole.pt")["step_losses"]

    out = tmp_path / "killed.pt"
    child = spawn([*argv, "--out", str(out)])
    position, stamp = 0, None
    while child.poll() is None and position < 3:  # wait for the third mid-epoch checkpoint
        time.sleep(0.02)
        try:
            if out.exists() and out.stat().st_mtime_ns != stamp:
                stamp = out.stat().st_mtime_ns
                position = read_checkpoint(out)["position"]
        except Exception:  # noqa: BLE001 - replaced between the check and the read: look again
            continue
    os.kill(child.pid, signal.SIGKILL)
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, "the run ended before it was killed"
    killed = read_checkpoint(out)
    assert killed["epoch"] == 0 and 0 < killed["position"] < len(reference)  # mid-epoch
    assert killed["step_losses"] == reference[: killed["step"]]

    resumed = spawn([*argv, "--out", str(out), "--resume"])
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr.decode()
    summary = json.loads(stdout)
    assert summary["resumed_from_step"] == killed["step"]
    assert read_checkpoint(out)["step_losses"] == reference  # the resumed steps: exactly the same losses
    assert summary["skipped_images"] == 1  # counted once, whether met before the kill or after it


def whole_bundle(folder: Path) -> bool:
    manifest = json.loads((folder / "manifest.json").read_text())
    return all(file_sha256(folder / f["path"]) == f["sha256"] for f in manifest["files"].values())


def test_export_killed_at_random_moments_keeps_a_whole_bundle_or_none(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    argv = ["export", "--arch", SMALLEST, "--space", "mbv3-small-input", "--untrained", "--format", "onnx",
            "--no-measure"]
    rng = random.Random(SEED + 2)
    (tmp_path / "timing").mkdir()
    span = 0.8 * writing_phase(spawn([*argv, "--out", str(tmp_path / "timing" / "D")]), tmp_path / "timing" / ".D.lock")
    counts = {"kills": 0, "bundle_on_disk_after_kill": 0, "leftovers_after_kill": 0, "leftovers_after_rerun": 0}
    folder = tmp_path
    out = folder / "D"
    for _ in range(POINTS):  # from the second point on, the killed export replaces the rerun's bundle
        child = spawn([*argv, "--out", str(out)])
        counts["kills"] += kill_after(child, folder / ".D.lock", rng.uniform(0.0, span))
        if out.exists():
            counts["bundle_on_disk_after_kill"] += 1
            assert whole_bundle(out)
        counts["leftovers_after_kill"] += len(hidden_entries(folder))
        assert cli_main([*argv, "--out", str(out)]) == 0
        assert whole_bundle(out)
        counts["leftovers_after_rerun"] += len(hidden_entries(folder))
        assert hidden_entries(folder) == []
    capsys.readouterr()
    with capsys.disabled():
        report("export", counts)
    assert counts["kills"] >= POINTS - 1
