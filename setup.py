# cffi's setuptools hook has no pyproject.toml key; this file only names the build script.
from setuptools import setup

setup(cffi_modules=["wpcompare/_build.py:ffibuilder"])
