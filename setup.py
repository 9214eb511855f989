"""Package discovery: the one thing setup.cfg cannot say.

The repository keeps `training/` and `serving/` at its top level; installed,
they are `keras_vit.training` and `keras_vit.serving`, so that no generic
top-level name lands in site-packages. Every package under the three folders
is found here, none listed by hand (a list once forgot `keras_vit.weights`);
everything else about the distribution is in setup.cfg.
"""

from setuptools import find_packages, setup

#: Installed package name -> the repository folder that holds it.
FOLDERS = {"keras_vit.training": "training", "keras_vit.serving": "serving"}


def packages() -> list[str]:
    """`keras_vit` and its sub-packages, with `training.X` and `serving.X` found under their installed names."""
    found = find_packages(include=["keras_vit", "keras_vit.*"])
    for name, folder in FOLDERS.items():
        found += [name + package[len(folder):] for package in find_packages(include=[folder, f"{folder}.*"])]
    return sorted(found)


setup(packages=packages(), package_dir=FOLDERS)
