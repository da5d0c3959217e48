import json
import subprocess
import sys

from hwnas.cli import VERBS, build_parser, main


def test_help_lists_every_verb():
    out = subprocess.run([sys.executable, "-m", "hwnas", "--help"], capture_output=True, text=True, check=True)
    for verb in ("profile", "validate", "fit-latency", "train", "search", "bench", "export", "demo"):
        assert verb in out.stdout
    assert set(VERBS) >= {"profile", "validate", "fit-latency", "train", "search", "bench", "export", "demo"}


def test_every_verb_help_has_an_example():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    for verb, p in sub.choices.items():
        assert "hwnas " + verb in p.format_help(), f"`hwnas {verb} --help` shows no example"


def test_bad_profile_is_exit_2_with_json_error(tmp_path, capsys):
    bad = tmp_path / "p.yaml"
    bad.write_text("name: x\nbackend: quantum\n")
    status = main(["profile", str(bad), "--space", "mbv3-small-input", "--json"])
    assert status == 2
    out = json.loads(capsys.readouterr().out)
    assert "backend" in out["error"] and "onnxruntime" in out["error"]


def test_atomic_json_write_is_readable_and_replaces(tmp_path):
    import os
    import stat

    from hwnas.io import atomic_write_json, read_json

    path = tmp_path / "a.json"
    atomic_write_json(path, {"x": 1})
    atomic_write_json(path, {"x": 2})
    assert read_json(path) == {"x": 2}
    assert os.stat(path).st_mode & stat.S_IROTH
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left behind
