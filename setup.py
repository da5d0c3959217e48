"""Build step that copies the shipped device profiles and latency tables into the package.

The repository keeps them at its top level (`device_profiles/`, `latency_tables/`); a wheel
carries them as package data (`hwnas/device_profiles/`, `hwnas/latency_tables/`) so an
installed hwnas finds them outside the checkout (`hwnas.resources`). Everything else is in
pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# a tuned TVM table's records travel beside it (`<table>.tuning.json.gz`)
SHIPPED = {"device_profiles": ("*.yaml",), "latency_tables": ("*.json", "*.tuning.json.gz")}


class BuildPyWithShippedData(build_py):
    def run(self):
        super().run()
        root = Path(__file__).resolve().parent
        for folder, patterns in SHIPPED.items():
            target = Path(self.build_lib) / "hwnas" / folder
            target.mkdir(parents=True, exist_ok=True)
            for pattern in patterns:
                for source in sorted((root / folder).glob(pattern)):
                    shutil.copyfile(source, target / source.name)


setup(cmdclass={"build_py": BuildPyWithShippedData})
