"""The code sandbox: a native launcher (csrc/sandbox, built with CMake) and its Python API (run)."""
