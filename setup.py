"""Package discovery: r1mega/* as is, and kernels/ under the import name ``r1mega_kernels``."""

from setuptools import find_packages, setup

packages = find_packages(include=["r1mega", "r1mega.*"])
kernel_packages = ["r1mega_kernels" + p[len("kernels"):] for p in find_packages(include=["kernels", "kernels.*"])]
setup(
    packages=packages + kernel_packages,
    package_dir={"r1mega_kernels": "kernels"},
    package_data={"r1mega.recipes": ["*.yaml"]},
    include_package_data=True,
)
