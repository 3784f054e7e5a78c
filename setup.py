"""Package discovery: r1mega/* as is, and kernels/ under the import name ``r1mega_kernels``; and the
native parts (``CMakeLists.txt``: the code sandbox's launcher), built into the package at install.

Every directory of modules needs an ``__init__.py`` (find_packages skips one without it), and every
file a package reads from its own directory at run time is package data here;
tests/test_wheel.py builds the wheel and checks both against the source tree.
"""

import os
import shutil
import subprocess
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))
NATIVE = ("r1mega-sandbox",)  # executables of CMakeLists.txt, installed into r1mega/sandbox/bin/


def build_native(dest: str) -> None:
    """Build the native executables with CMake (or, without CMake, the C compiler directly) into ``dest``.

    A machine without either gets a warning and a package without the sandbox (code rewards then
    say how to build it); ``R1MEGA_REQUIRE_NATIVE=1`` makes that an error."""
    build = os.path.join(HERE, "build", "native")
    os.makedirs(dest, exist_ok=True)
    try:
        if shutil.which("cmake"):
            subprocess.run(["cmake", "-S", HERE, "-B", build, "-DCMAKE_BUILD_TYPE=Release"], check=True,
                           stdout=subprocess.DEVNULL)
            subprocess.run(["cmake", "--build", build], check=True, stdout=subprocess.DEVNULL)
        else:
            cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
            if not cc:
                raise RuntimeError("neither cmake nor a C compiler (cc, gcc) was found")
            os.makedirs(build, exist_ok=True)
            subprocess.run([cc, "-O2", "-std=gnu11", "-o", os.path.join(build, "r1mega-sandbox"),
                            os.path.join(HERE, "csrc", "sandbox", "r1mega_sandbox.c")], check=True)
        for name in NATIVE:
            shutil.copy2(os.path.join(build, name), os.path.join(dest, name))
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        if os.environ.get("R1MEGA_REQUIRE_NATIVE") == "1":
            raise
        print(f"r1mega: WARNING: the native code sandbox was not built ({e}); code rewards will not run "
              "until it is (cmake -S . -B build && cmake --build build)", file=sys.stderr)


class BuildPyWithNative(build_py):
    """build_py, then the native executables into the built package."""

    def run(self):
        super().run()
        build_native(os.path.join(self.build_lib, "r1mega", "sandbox", "bin"))


class PlatformDistribution(Distribution):
    """The wheel holds a compiled executable: tag it for this platform, not py3-none-any."""

    def has_ext_modules(self):
        return True


packages = find_packages(include=["r1mega", "r1mega.*"])
kernel_packages = ["r1mega_kernels" + p[len("kernels"):] for p in find_packages(include=["kernels", "kernels.*"])]
setup(
    packages=packages + kernel_packages,
    package_dir={"r1mega_kernels": "kernels"},
    # data files read from the package's own directory at run time (e.g. r1mega/recipes/tiny_cpu.yaml)
    package_data={"": ["*.yaml", "*.yml", "*.json"]},
    include_package_data=True,
    cmdclass={"build_py": BuildPyWithNative},
    distclass=PlatformDistribution,
)
