from pathlib import Path

import pytest

from hwnas.device_profile import PROFILE_DIR, load_profile
from hwnas.errors import InputError

GOOD = """\
name: t
backend: onnxruntime
options: {threads: 1}
batch: 1
protocol: {warmup: 5, min_repeats: 10, max_repeats: 100}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "profile.yaml"
    p.write_text(text)
    return p


def test_every_shipped_profile_loads():
    files = sorted(PROFILE_DIR.glob("*.yaml"))
    names = {load_profile(f).name for f in files}
    assert {"cpu-ort-1t", "cpu-ort-all"} <= names
    assert len(names) == len(files), "profile names must be unique"


def test_profile_by_name_and_thread_resolution():
    import os

    assert load_profile("cpu-ort-1t").threads() == 1
    assert load_profile("cpu-ort-all").threads() == os.cpu_count()


def test_good_profile_fills_defaults(tmp_path):
    p = load_profile(write(tmp_path, GOOD))
    assert p.backend == "onnxruntime" and p.options["graph_optimization"] == "all"
    assert p.protocol.warmup == 5 and p.protocol.max_cv == 0.10


@pytest.mark.parametrize(
    "text, field, hint",
    [
        (GOOD + "colour: red\n", "colour", "allowed keys"),  # unknown top-level key
        (GOOD.replace("onnxruntime", "quantum"), "backend", "onnxruntime"),  # unknown backend
        (GOOD.replace("batch: 1", "batch: one"), "batch", "integer"),  # wrong type
        (GOOD.replace("batch: 1", "batch: 0"), "batch", ">= 1"),  # out of range
        (GOOD.replace("{threads: 1}", "{threads: 0}"), "options.threads", ">= 1"),
        (GOOD.replace("{threads: 1}", "{cores: 2}"), "options.cores", "allowed: threads"),  # unknown option
        (GOOD.replace("warmup: 5", "warmup: -1"), "protocol.warmup", "integer in"),
        (GOOD.replace("max_repeats: 100", "max_repeats: 5"), "protocol.max_repeats", "min_repeats"),
        (GOOD + "resolutions: [28, big]\n", "resolutions", "integers"),
        (GOOD.replace("name: t\n", ""), "name", "missing"),
        (GOOD.replace("warmup: 5", "timing: cuda_graph"), "protocol.timing", "CUDA"),
        ("name: t\nbackend: torch\noptions: {mode: graph}\n", "options.mode", "cuda"),
        ("name: t\nbackend: torch\noptions: {precision: int3}\n", "options.precision", "fp16"),
    ],
)
def test_malformed_profile_names_file_field_and_expectation(tmp_path, text, field, hint):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_profile(path)
    msg = str(err.value)
    assert str(path) in msg and f"'{field}'" in msg and hint in msg


def test_unparseable_yaml_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="not valid YAML"):
        load_profile(write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(InputError, match="not found"):
        load_profile(tmp_path / "absent.yaml")
    with pytest.raises(InputError, match="expected a mapping"):
        load_profile(write(tmp_path, "- a list\n"))
