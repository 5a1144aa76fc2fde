"""Ships the repository's top-level conf/ (the one source of the configs) and README.md inside the wheel.

A wheel carries only packages; this build step copies conf/ to trainlab/conf/ and README.md to trainlab/README.md
in the build tree, so a plain `pip install .` works from any directory. A checkout (or an editable install) reads
conf/ where it is (trainlab/config.py looks beside the package first, then in the checkout).
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithConfigs(build_py):
    def run(self):
        super().run()
        here, target = Path(__file__).resolve().parent, Path(self.build_lib) / "trainlab"
        shutil.copytree(here / "conf", target / "conf", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy2(here / "README.md", target / "README.md")  # data=text's default file


setup(cmdclass={"build_py": BuildWithConfigs})
