"""One import name, ``msagg``, over the repository's top-level folders: ``msagg.pipeline`` is
``pipeline/``, ``msagg.stages`` is ``stages/``, ``msagg.data`` is ``data/``, ``msagg.models`` is
``models/``. Every sub-package under them is found, so none is left out of the wheel."""

from setuptools import find_packages, setup

FOLDERS = ("pipeline", "stages", "data", "models")

setup(
    package_dir={"msagg": "msagg", **{f"msagg.{folder}": folder for folder in FOLDERS}},
    packages=["msagg"]
    + [f"msagg.{folder}" for folder in FOLDERS]
    + [f"msagg.{folder}.{sub}" for folder in FOLDERS for sub in find_packages(folder)],
)
