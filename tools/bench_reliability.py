"""The hostile cases of the reliability table, run against a checkout of hwnas: exit status, whether a traceback was
printed, what was left on disk, and the error's first words. Prints a Markdown table.

    python tools/bench_reliability.py                  # this checkout
    python tools/bench_reliability.py --checkout DIR   # another one (e.g. an older commit, `git worktree add`)

Every command runs as `python -m hwnas ...` with PYTHONPATH=the checkout, in a fresh temporary folder.
About two minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
SMALLEST = ('{"r": 20, "d": [2, 2, 2, 2, 2], "k": [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3], '
            '"e": [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]}')
TRAIN = ["train", "--quick", "--epochs", "1", "--limit-train", "64", "--batch-size", "32", "--val-size", "64",
         "--threads", "1", "--no-progress"]


class Runner:
    def __init__(self, checkout: Path, work: Path):
        self.checkout, self.work = checkout, work
        self.env = {**os.environ, "PYTHONPATH": str(checkout), "HWNAS_RESCUE_DIR": str(work / "rescued")}
        self.rows: list[tuple[str, str, str, str]] = []

    def spawn(self, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "hwnas", *argv], cwd=self.work, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, argv: list[str], timeout: float = 300) -> tuple[int, str, str]:
        child = self.spawn(argv)
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
            return 124, out, err
        return child.returncode, out, err

    def record(self, case: str, status: int, err: str, left: str = "") -> None:
        lines = [x for x in err.splitlines() if "error" in x.lower()]
        message = (lines[-1] if lines else "").split("error:", 1)[-1].strip().replace(str(self.work) + "/", "")
        if len(message) > 90:
            message = message[:87] + "..."
        tb = "yes" if "Traceback" in err else "no"
        self.rows.append((case, str(status), tb, left or "-", message.replace("|", "/")))
        print(f"{case}: {status}", file=sys.stderr, flush=True)

    def case(self, case: str, argv: list[str], left: str = "", timeout: float = 300) -> tuple[int, str]:
        status, out, err = self.run(argv, timeout)
        self.record(case, status, err, left)
        return status, out


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", type=Path, default=HERE, help="the hwnas checkout to try (default: this one)")
    parser.add_argument("--only", default=None, metavar="GROUPS",
                        help="comma-separated groups to run: outputs, replace, interrupt, values (default all)")
    args = parser.parse_args()
    groups = set(args.only.split(",")) if args.only else {"outputs", "replace", "interrupt", "values"}
    work = Path(tempfile.mkdtemp(prefix="hwnas-reliability-"))
    r = Runner(args.checkout.resolve(), work)
    (work / "file").write_text("a plain file\n")
    table = HERE / "latency_tables" / "cpu-ort-1t_mbv3-small-input.json"
    csv = HERE.parent / "shared" / "benchmarks" / "ofa_mbv3_gpu_latency.csv"
    search = ["search", "--space", "mbv3-small-input", "--table", str(table), "--objectives", "latency_ms,params",
              "--pop", "8", "--gens", "2", "--budget-ms", "100"]
    export = ["export", "--arch", SMALLEST, "--space", "mbv3-small-input", "--untrained", "--format", "onnx",
              "--no-measure"]

    if "outputs" in groups:
        r.case("train --out under a file", [*TRAIN, "--out", "file/c.pt"])
        r.case("search --out under a file", [*search, "--out", "file/r"])
        r.case("validate --plot under a file", ["validate", str(table), "--plot", "file/p.png"])
        r.case("export --out under a file", [*export, "--out", "file/D"])
        if csv.is_file():
            r.case("fit-latency --out under a file", ["fit-latency", "--csv", str(csv), "--target", "lat_ms_titan_xp_1",
                                                      "--train-size", "50", "--splits", "1", "--out", "file/m.json"])
        r.case("demo --out a file", ["demo", "--out", "file"], timeout=60)

    if "replace" in groups or "values" in groups:  # the values group uses this search run
        r.run([*search, "--out", "run"])
    if "replace" in groups:
        r.run([*TRAIN, "--epochs", "2", "--out", "c.pt"])
        r.case("train --out an existing 2-epoch checkpoint", [*TRAIN, "--out", "c.pt"])
        r.rows[-1] = (*r.rows[-1][:3], f"checkpoint of {epochs(work / 'c.pt')} epochs", r.rows[-1][4])
        r.run([*TRAIN, "--epochs", "2", "--out", "c2.pt"])
        before = (work / "c2.pt").read_bytes()
        status, out = r.case("train --resume --epochs 1 of a 2-epoch run", [*TRAIN, "--resume", "--out", "c2.pt",
                                                                              "--json"])
        ran = json.loads(out).get("epochs_run") if out.strip() else None
        r.rows[-1] = (*r.rows[-1][:3], f"epochs_run {ran}; checkpoint "
                      + ("unchanged" if (work / "c2.pt").read_bytes() == before else "rewritten"), r.rows[-1][4])
        before = (work / "run" / "pareto.json").read_bytes()
        r.case("search --out an existing run", [*search, "--seed", "1", "--out", "run"])
        r.rows[-1] = (*r.rows[-1][:3], "pareto.json " + (
            "unchanged" if (work / "run" / "pareto.json").read_bytes() == before else "replaced"), r.rows[-1][4])
        (work / "run" / "pareto.json").write_bytes(before)

    if "interrupt" in groups:
        (work / "rpc.yaml").write_text("name: rpc-unreachable\nbackend: tvm\noptions: {target: llvm, rpc_host: "
                                       "127.0.0.1, rpc_port: 9}\nprotocol: {warmup: 1, min_repeats: 3}\n")
        r.case("profile, RPC server unreachable", ["profile", "rpc.yaml", "--space", "mbv3-small-input", "--out",
                                                   "rpc.json", "--no-progress"])
        r.rows[-1] = (*r.rows[-1][:3], "table left" if (work / "rpc.json").exists() else "no table", r.rows[-1][4])
        child = r.spawn(["profile", "cpu-ort-1t", "--space", "mbv3-small-input", "--quick", "--out", "t.json",
                         "--no-progress"])
        while not (work / "t.json").exists() and child.poll() is None:
            time.sleep(0.05)
        time.sleep(2.0)
        second = r.case("a second profile --resume of a table being written",
                        ["profile", "cpu-ort-1t", "--space", "mbv3-small-input", "--quick", "--out", "t.json",
                         "--resume", "--no-progress"], timeout=120)[0]
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=120)
        r.record("SIGTERM during profile", child.returncode, err,
                 left=("second writer ran; " if second in (0, 124) else "") + (
                     "table loads" if _loads(work / "t.json") else "no table") + f"; hidden {hidden(work)}")

    if "values" in groups:
        r.case("train --threads -1", [*TRAIN, "--threads", "-1", "--out", "c3.pt"])
        r.case("search --max-params -1", [*search, "--max-params", "-1", "--out", "run2"])
        r.rows[-1] = (*r.rows[-1][:3], "run written" if (work / "run2" / "pareto.json").exists() else "nothing written",
                      r.rows[-1][4])
        r.case("export --pick=-1", ["export", "run/pareto.json", "--pick=-1", "--untrained", "--format", "onnx",
                                    "--no-measure", "--out", "D1"])
        r.rows[-1] = (*r.rows[-1][:3], "bundle written" if (work / "D1").exists() else "nothing written", r.rows[-1][4])
        doc = json.loads((work / "run" / "pareto.json").read_text())
        doc["pareto"].append({"arch": {**json.loads(SMALLEST), "k": [4] * 20}})
        (work / "bad.json").write_text(json.dumps(doc))
        r.case("export of a bad arch in pareto.json", ["export", "bad.json", "--pick", str(len(doc["pareto"]) - 1),
                                                       "--untrained", "--format", "onnx", "--no-measure", "--out",
                                                       "D2"])
        nb = json.loads(table.read_text())
        sys.path.insert(0, str(r.checkout))
        from hwnas.latency.fingerprint import device_fingerprint
        from hwnas.space import get_space

        space = get_space("nb201")
        entry = {"median_ms": 0.1, "p25_ms": 0.09, "p75_ms": 0.11, "cv": 0.1, "n": 10}
        for key in ("anchor", "anchor_arch", "anchored", "anchor_ms"):
            nb["protocol"].pop(key, None)
        nb.update(space={"name": "nb201", "config": {}}, device=device_fingerprint(),
                  entries={k: dict(entry) for k in space.all_ops()}, expected_entries=len(space.all_ops()))
        (work / "nb201.json").write_text(json.dumps(nb))
        r.case("validate on an nb201 table", ["validate", "nb201.json", "--n", "3", "--calib-n", "3", "--no-progress"])

    print("| case | exit | traceback | on disk after | message |")
    print("|---|---|---|---|---|")
    for row in r.rows:
        print("| " + " | ".join(row) + " |")


def epochs(path: Path) -> int | None:
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except (OSError, RuntimeError, KeyError):
        return None


def _loads(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text()), dict)
    except (OSError, ValueError):
        return False


if __name__ == "__main__":
    main()
