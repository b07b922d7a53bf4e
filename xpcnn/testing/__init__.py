"""Helpers for testing xpcnn itself; never imported by the library.

:mod:`xpcnn.testing.fakecupy` is a CPU stand-in for CuPy, so that the code
paths xpcnn takes on a GPU run (and are checked) on any machine.
"""
