"""Package discovery: r1mega/* as is, and kernels/ under the import name ``r1mega_kernels``.

Every directory of modules needs an ``__init__.py`` (find_packages skips one without it), and every
file a package reads from its own directory at run time is package data here;
tests/test_wheel.py builds the wheel and checks both against the source tree.
"""

from setuptools import find_packages, setup

packages = find_packages(include=["r1mega", "r1mega.*"])
kernel_packages = ["r1mega_kernels" + p[len("kernels"):] for p in find_packages(include=["kernels", "kernels.*"])]
setup(
    packages=packages + kernel_packages,
    package_dir={"r1mega_kernels": "kernels"},
    # data files read from the package's own directory at run time (e.g. r1mega/recipes/tiny_cpu.yaml)
    package_data={"": ["*.yaml", "*.yml", "*.json"]},
    include_package_data=True,
)
