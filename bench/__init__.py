"""Benchmarks of the outdial service: `python -m bench --help`.

Every figure is a ratio against a baseline measured in the same run, on the
same broker and store, so the noise of a shared machine cancels out.
"""
