"""Nothing lost, nothing half-done: output paths, overwrite and resume rules, interrupted runs,
one writer per artifact, range checks at the edge, and the RPC instructions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_fit_latency import _write_csv
from test_latency_profile import PROFILE_YAML, TESTS, TINY
from test_train import tiny_data, tiny_settings

from hwnas.cli import main as cli_main
from hwnas.errors import InputError
from hwnas.latency.table import LatencyTable
from hwnas.space import get_space
from hwnas.train import read_checkpoint, train

REPO = TESTS.parent
SMALLEST = json.dumps(get_space("mbv3-small-input").smallest())


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit status, the JSON error or "", stderr) of one in-process CLI call."""
    status = cli_main([*argv, "--json"])
    captured = capsys.readouterr()
    error = json.loads(captured.out).get("error", "") if captured.out.strip() else ""
    return status, error, captured.err


def fill(text: str, **values: str) -> str:
    for name, value in values.items():
        text = text.replace("{" + name + "}", str(value))
    return text


def child_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{TESTS}", **extra}


def spawn(argv: list[str], **extra_env: str) -> subprocess.Popen:
    """`python -m hwnas ARGV` in a child process, running this checkout."""
    return subprocess.Popen([sys.executable, "-m", "hwnas", *argv], cwd=REPO, env=child_env(**extra_env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def spawn_tiny_profile(argv: list[str], n_ops: int) -> subprocess.Popen:
    """`hwnas profile` on the tiny conv space of test_latency_profile (n_ops op keys) in a child process."""
    code = (f"import sys; import test_latency_profile as t; t.TinyConvSpace.__init__.__defaults__ = ({n_ops}, None); "
            "sys.exit(t.child_main(sys.argv[1:]))")
    return subprocess.Popen([sys.executable, "-c", code, "profile", *argv], cwd=REPO, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"child ended first: {proc.stderr.read().decode()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the child")
        time.sleep(0.01)


def hidden_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def fast_profile(tmp_path) -> Path:
    path = tmp_path / "fast.yaml"
    path.write_text(PROFILE_YAML.format(name="fast-ort", rounds=1))
    return path


@pytest.fixture
def a_file(tmp_path) -> Path:
    """A plain file: any path under it cannot be created."""
    path = tmp_path / "plain-file"
    path.write_text("not a folder\n")
    return path


# --- 1. output paths checked before the work; failures are one line -------------------------------

OUTPUT_CASES = {
    "train --out": (["train", "--quick", "--out", "{bad}/c.pt"], "{bad}/c.pt"),
    "search --out": (["search", "--space", "mbv3-small-input", "--table", "{tmp}/none.json", "--budget-ms", "5",
                      "--objectives", "latency_ms,params", "--out", "{bad}/run"], "{bad}/run"),
    "validate --plot": (["validate", "{tmp}/none.json", "--plot", "{bad}/p.png"], "{bad}/p.png"),
    "validate --calibration-out": (["validate", "{tmp}/none.json", "--calibration-out", "{bad}/c.json"],
                                   "{bad}/c.json"),
    "export --out": (["export", "--arch", SMALLEST, "--space", "mbv3-small-input", "--untrained", "--format", "onnx",
                      "--no-measure", "--out", "{bad}/D"], "{bad}/D"),
    "fit-latency --out": (["fit-latency", "--csv", "{tmp}/lat.csv", "--target", "lat_ms_a", "--train-size", "30",
                           "--out", "{bad}/m.json"], "{bad}/m.json"),
    "demo --out": (["demo", "--out", "{bad}"], "{bad}"),
    "profile --out": (["profile", "{tmp}/fast.yaml", "--space", TINY, "--out", "{bad}/t.json"], "{bad}/t.json"),
}


@pytest.mark.parametrize("case", sorted(OUTPUT_CASES))
def test_an_unwritable_output_is_exit_2_naming_it_before_any_work(case, tmp_path, a_file, fast_profile, capsys):
    argv, named = OUTPUT_CASES[case]
    _write_csv(tmp_path / "lat.csv")
    values = {"bad": a_file, "tmp": tmp_path}
    began = time.perf_counter()
    status, error, stderr = cli([fill(a, **values) for a in argv], capsys)
    assert status == 2, error
    assert fill(named, **values) in error and "Traceback" not in stderr
    assert time.perf_counter() - began < 5  # refused before the work, not after it
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["plain-file", "lat.csv", "fast.yaml"])


def test_check_writable_catches_a_file_in_the_way_and_a_folder_for_a_file(tmp_path, a_file):
    from hwnas.io import check_writable

    check_writable(tmp_path / "new" / "deeper" / "t.json")  # parents that do not exist yet are fine
    with pytest.raises(InputError, match="is not a folder"):
        check_writable(a_file / "t.json")
    with pytest.raises(InputError, match="is a folder"):
        check_writable(tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        check_writable(a_file, folder=True)
    assert hidden_entries(tmp_path) == []  # the probe file is gone


def test_a_result_whose_destination_fails_is_rescued_and_the_error_says_where(tmp_path, a_file, monkeypatch):
    from hwnas.errors import OutputError
    from hwnas.io import write_or_rescue

    monkeypatch.setenv("HWNAS_RESCUE_DIR", str(tmp_path / "rescued"))
    with pytest.raises(OutputError) as caught:
        write_or_rescue(a_file / "pareto.json", b'{"pareto": []}\n', what="Pareto set")
    message = str(caught.value)
    (saved,) = (tmp_path / "rescued").iterdir()
    assert str(a_file / "pareto.json") in message and str(saved) in message
    assert saved.read_bytes() == b'{"pareto": []}\n'


def test_a_checkpoint_folder_that_fails_mid_run_is_one_line_and_the_epoch_is_rescued(tmp_path):
    folder = tmp_path / "runs"
    out = folder / "c.pt"
    rescued = tmp_path / "rescued"
    child = spawn(["train", "--quick", "--epochs", "3", "--limit-train", "64", "--batch-size", "32",
                   "--val-size", "64", "--threads", "1", "--no-progress", "--out", str(out)],
                  HWNAS_RESCUE_DIR=str(rescued))
    wait_for(out.exists, child, timeout=120)  # epoch 1 saved; epoch 2 evaluates for seconds
    for entry in folder.iterdir():
        entry.unlink()
    folder.rmdir()
    folder.write_text("the folder is gone\n")
    _, stderr = child.communicate(timeout=120)
    stderr = stderr.decode()
    assert child.returncode == 1 and "Traceback" not in stderr
    (line,) = [x for x in stderr.splitlines() if "error" in x]
    (saved,) = rescued.iterdir()
    assert str(out) in line and str(saved) in line
    assert read_checkpoint(saved)["epoch"] == 2


def test_tracebacks_only_with_debug(tmp_path, a_file, capsys, monkeypatch):
    argv = ["train", "--quick", "--out", str(a_file / "c.pt")]
    assert cli_main(argv) == 2 and "Traceback" not in capsys.readouterr().err
    assert cli_main([*argv, "--debug"]) == 2 and "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("HWNAS_DEBUG", "1")
    assert cli_main(argv) == 2 and "Traceback" in capsys.readouterr().err


# --- 2. nothing replaced without --overwrite; a finished --resume changes nothing ----------------

@pytest.fixture(scope="module")
def finished_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "c.pt"
    train(tiny_settings(epochs=2), out, device="cpu", progress=False, dataset=tiny_data())
    return out


def test_train_refuses_to_replace_a_checkpoint_without_overwrite(finished_checkpoint, capsys):
    before = finished_checkpoint.read_bytes()
    status, error, _ = cli(["train", "--quick", "--out", str(finished_checkpoint)], capsys)
    assert status == 2 and "--overwrite" in error and str(finished_checkpoint) in error
    assert finished_checkpoint.read_bytes() == before


def test_resume_of_a_finished_run_says_so_and_changes_nothing(finished_checkpoint, capsys):
    before = finished_checkpoint.read_bytes()
    status = cli_main(["train", "--quick", "--resume", "--epochs", "1", "--out", str(finished_checkpoint), "--json"])
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert status == 0 and result["epochs_run"] == 0 and result["finished"] and result["epochs"] == 2
    assert "nothing to do" in captured.err
    assert finished_checkpoint.read_bytes() == before


def test_profile_resume_of_a_complete_table_says_so_and_leaves_the_file_as_it_is(tmp_path, fast_profile, capsys):
    out = tmp_path / "t.json"
    argv = ["profile", str(fast_profile), "--space", TINY, "--out", str(out), "--no-progress"]
    assert cli(argv, capsys)[0] == 0
    before = out.read_bytes()
    status = cli_main([*argv, "--resume", "--json"])
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert status == 0 and result["finished"] and (result["measured"], result["reused"]) == (0, 6)
    assert "nothing to do" in captured.err and out.read_bytes() == before


def test_fit_latency_refuses_to_replace_its_model_without_overwrite(tmp_path, capsys):
    csv_path = _write_csv(tmp_path / "lat.csv")
    model = tmp_path / "m.json"
    argv = ["fit-latency", "--csv", str(csv_path), "--target", "lat_ms_a", "--train-size", "30", "--splits", "1",
            "--out", str(model)]
    assert cli(argv, capsys)[0] == 0
    before = model.read_bytes()
    status, error, _ = cli(argv, capsys)
    assert status == 2 and "--overwrite" in error and model.read_bytes() == before
    assert cli([*argv, "--overwrite"], capsys)[0] == 0


def test_search_refuses_to_replace_a_run_folder_without_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "pareto.json").write_text('{"kept": true}\n')
    status, error, _ = cli(["search", "--space", "mbv3-small-input", "--table", str(tmp_path / "t.json"),
                            "--objectives", "latency_ms,params", "--budget-ms", "5", "--out", str(run)], capsys)
    assert status == 2 and "--overwrite" in error and str(run) in error
    assert (run / "pareto.json").read_text() == '{"kept": true}\n'


def test_demo_refuses_to_redo_a_finished_demo_without_overwrite(tmp_path):
    (tmp_path / "D" / "bundle").mkdir(parents=True)
    (tmp_path / "D" / "bundle" / "manifest.json").write_text("{}\n")
    child = spawn(["demo", "--out", str(tmp_path / "D"), "--json"])
    out, err = child.communicate(timeout=60)  # the old demo went on profiling for minutes here
    assert child.returncode == 2 and "--overwrite" in json.loads(out)["error"]
    assert sorted(p.name for p in (tmp_path / "D").iterdir()) == ["bundle"]


# --- 3. interrupted runs leave nothing a later run trips on ---------------------------------------

def test_stale_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path, fast_profile):
    from hwnas.io import remove_stale

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "t.json"
        stale = [tmp_path / f".t.json.pid{gone.pid}-abc123.tmp", tmp_path / f".D.partial-pid{gone.pid}-x1y2"]
        stale[0].write_text("half")
        stale[1].mkdir()
        (stale[1] / "model.onnx").write_bytes(b"half")
        live = tmp_path / f".t.json.pid{alive.pid}-def456.tmp"
        live.write_text("being written")
        assert cli_main(["profile", str(fast_profile), "--space", TINY, "--out", str(out), "--no-progress"]) == 0
        assert not stale[0].exists() and live.exists()
        assert remove_stale(tmp_path / "D") == [str(stale[1])]
    finally:
        alive.kill()
        alive.wait()


def test_sigterm_stops_profile_cleanly_and_resume_completes_it(tmp_path, fast_profile):
    out = tmp_path / "t.json"
    child = spawn_tiny_profile([str(fast_profile), "--space", TINY, "--out", str(out), "--no-progress"], n_ops=400)
    wait_for(lambda: out.exists() and len(json.loads(out.read_text() or "{}").get("entries", {})) >= 2, child)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)
    stderr = stderr.decode()
    assert child.returncode == 1 and "terminated" in stderr and "Traceback" not in stderr
    partial = LatencyTable.load(out)
    assert 2 <= len(partial) < 400
    assert hidden_entries(tmp_path) == []  # no temporary file, no lock left


def test_a_profile_that_fails_before_its_first_measurement_leaves_no_table(tmp_path, capsys):
    pytest.importorskip("tvm")
    profile_path = tmp_path / "rpc.yaml"
    profile_path.write_text("name: rpc-unreachable\nbackend: tvm\noptions: {target: llvm, threads: 1, rpc_host: "
                            "127.0.0.1, rpc_port: 9}\nprotocol: {warmup: 1, min_repeats: 3, max_repeats: 5}\n")
    out = tmp_path / "t.json"
    status, error, stderr = cli(["profile", str(profile_path), "--space", TINY, "--out", str(out)], capsys)
    assert status == 2 and "cannot reach the TVM RPC server" in error and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rpc.yaml"]  # no table, no lock, no temporary


# --- 4. one writer per table, checkpoint and bundle ------------------------------------------------

def test_a_second_profile_of_one_table_is_exit_2_naming_the_holder(tmp_path, fast_profile, capsys):
    out = tmp_path / "t.json"
    child = spawn_tiny_profile([str(fast_profile), "--space", TINY, "--out", str(out), "--no-progress"], n_ops=400)
    try:
        wait_for(out.exists, child)
        before = out.read_bytes()
        status, error, _ = cli(["profile", str(fast_profile), "--space", TINY, "--out", str(out), "--resume"], capsys)
        assert status == 2 and f"process {child.pid}" in error and str(out) in error
        assert out.exists() and len(LatencyTable.load(out)) >= len(json.loads(before)["entries"])
    finally:
        child.kill()
        child.wait()


def test_a_second_trainer_of_one_checkpoint_is_exit_2_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "c.pt"
    child = spawn(["train", "--quick", "--epochs", "3", "--limit-train", "64", "--batch-size", "32",
                   "--val-size", "64", "--threads", "1", "--no-progress", "--out", str(out)])
    try:
        wait_for((tmp_path / ".c.pt.lock").exists, child)
        status, error, _ = cli(["train", "--quick", "--resume", "--out", str(out)], capsys)
        assert status == 2 and f"process {child.pid}" in error
    finally:
        child.kill()
        child.wait()


def test_a_second_export_into_one_bundle_is_exit_2_naming_the_holder(tmp_path, capsys):
    from hwnas.io import artifact_lock

    out = tmp_path / "D"
    argv = ["export", "--arch", SMALLEST, "--space", "mbv3-small-input", "--untrained", "--format", "onnx",
            "--no-measure", "--out", str(out)]
    with artifact_lock(out, what="bundle"):  # this process holds the bundle, as a running export does
        child = spawn([*argv, "--json"])
        stdout, _ = child.communicate(timeout=120)
    assert child.returncode == 2 and f"process {os.getpid()}" in json.loads(stdout)["error"]
    assert not out.exists() and hidden_entries(tmp_path) == []


# --- 5. numeric options range-checked at the edge; bad architectures named by file and entry -------

RANGE_CASES = [
    (["train", "--quick", "--out", "{tmp}/c.pt", "--threads", "-1"], "--threads"),
    (["train", "--quick", "--out", "{tmp}/c.pt", "--epochs", "0"], "--epochs"),
    (["train", "--quick", "--out", "{tmp}/c.pt", "--lr", "nan"], "--lr"),
    (["train", "--quick", "--out", "{tmp}/c.pt", "--width-mult", "-0.5"], "--width-mult"),
    (["search", "--space", "mbv3-small-input", "--table", "{tmp}/t.json", "--budget-ms", "5",
      "--max-params", "-1", "--out", "{tmp}/r"], "--max-params"),
    (["search", "--space", "mbv3-small-input", "--table", "{tmp}/t.json", "--budget-ms", "5", "--seed", "-3",
      "--out", "{tmp}/r"], "--seed"),
    (["validate", "{tmp}/t.json", "--seed", "-1"], "--seed"),
    (["fit-latency", "--csv", "{tmp}/x.csv", "--target", "a", "--train-size", "-4"], "--train-size"),
    (["bench", "nb201", "--csv", "{tmp}/x.csv", "--accuracy", "a", "--latency", "b", "--evals", "0"], "--evals"),
    (["demo", "--out", "{tmp}/D", "--epochs", "-1"], "--epochs"),
    (["demo", "--out", "{tmp}/D", "--budget-ms", "0"], "--budget-ms"),
]


@pytest.mark.parametrize("argv,flag", RANGE_CASES, ids=[" ".join(a[:1] + [f]) for a, f in RANGE_CASES])
def test_a_numeric_option_out_of_range_is_exit_2_naming_it(argv, flag, tmp_path, capsys):
    status, error, stderr = cli([fill(a, tmp=tmp_path) for a in argv], capsys)
    assert status == 2 and f"field '{flag}'" in error and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def pareto_file(tmp_path) -> Path:
    space = get_space("mbv3-small-input")
    bad = {**space.smallest(), "k": [4] * 20}  # kernel 4 is not a choice of this space
    path = tmp_path / "pareto.json"
    path.write_text(json.dumps({"space": "mbv3-small-input", "pareto": [{"arch": space.smallest()}, {"arch": bad}],
                                "best_under_budget": {"arch": bad}}))
    return path


def test_export_pick_of_a_negative_index_is_exit_2(pareto_file, tmp_path, capsys):
    status, error, _ = cli(["export", str(pareto_file), "--pick=-1", "--untrained", "--out", str(tmp_path / "D")],
                           capsys)
    assert status == 2 and "--pick" in error and "index -1" in error and not (tmp_path / "D").exists()


@pytest.mark.parametrize("pick,entry", [("1", "pareto[1]"), ("best-under-budget", "best_under_budget")])
def test_a_bad_arch_in_pareto_json_names_the_file_and_the_entry(pareto_file, tmp_path, capsys, pick, entry):
    status, error, _ = cli(["export", str(pareto_file), "--pick", pick, "--untrained", "--out", str(tmp_path / "D")],
                           capsys)
    assert status == 2 and str(pareto_file) in error and f"entry {entry}" in error
    assert not (tmp_path / "D").exists()


def test_validate_on_a_table_of_a_tabular_space_is_exit_2(tmp_path, capsys):
    from hwnas.latency.fingerprint import device_fingerprint

    space = get_space("nb201")
    entry = {"median_ms": 0.1, "p25_ms": 0.09, "p75_ms": 0.11, "cv": 0.1, "n": 10}
    raw = json.loads((REPO / "latency_tables" / "cpu-ort-1t_mbv3-small-input.json").read_text())
    for key in ("anchor", "anchor_arch", "anchored", "anchor_ms"):
        raw["protocol"].pop(key, None)
    raw.update(space={"name": "nb201", "config": {}}, device=device_fingerprint(),
               entries={k: dict(entry) for k in space.all_ops()}, expected_entries=len(space.all_ops()))
    table = tmp_path / "nb201.json"
    table.write_text(json.dumps(raw))
    status, error, stderr = cli(["validate", str(table), "--n", "3", "--calib-n", "3"], capsys)
    assert status == 2 and str(table) in error and "nb201" in error and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb201.json"]


# --- 6. the RPC server is never told to listen on every interface ---------------------------------

def test_rpc_instructions_bind_a_private_address_and_state_the_risk():
    readme = (REPO / "README.md").read_text()
    profile_text = (REPO / "device_profiles" / "rpc-aarch64-tvm.yaml").read_text()
    for text in (readme, profile_text):
        assert "rpc_server --host 0.0.0.0" not in text and "--host 127.0.0.1" in text and "ssh -N -L" in text
        assert "no authentication" in text and "never listens" in text.lower()
    assert "RISK" in profile_text.split("name:")[0]  # in the comments, above the fields
