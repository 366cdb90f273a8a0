"""Maps the repository layout onto one import root, mesos_stateful.

services/ is the package mesos_stateful and executor/ is mesos_stateful.executor, so the folders
stay where the design card puts them while nothing is installed under a generic top-level name.
"""

from setuptools import find_packages, setup

ROOT = "mesos_stateful"
LAYOUT = {ROOT: "services", f"{ROOT}.executor": "executor"}

packages: list[str] = []
for package, folder in LAYOUT.items():
    packages.append(package)
    packages += [f"{package}.{sub}" for sub in find_packages(folder)]

setup(
    packages=packages,
    package_dir=LAYOUT,
    package_data={
        ROOT: ["py.typed"],
        f"{ROOT}.api": ["**/*.pyi", "py.typed"],
        f"{ROOT}.cli.scaffold": ["templates/*.tmpl", "templates/node/*", "templates/node/*/*"],
    },
)
