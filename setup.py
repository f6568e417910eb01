"""The package list is computed (setuptools reads the rest from pyproject.toml), so a new operator
package, edgebn/ops/<op>/ with its .c.j2 kernels, ships in the wheel without editing any list."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["edgebn", "edgebn.*"]) + ["edgebn.templates", "edgebn.firmware"])
