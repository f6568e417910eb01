# edgebn: the two commands of the README.
#   make demo   set everything up, train + compile the digits model, compare it on the emulated board
#   make test   set everything up and run the test suite
.PHONY: setup demo test bench

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/python examples/digits/run.py --out build/digits --qemu

test: setup
	.venv/bin/python -m pytest -q -p no:cacheprovider

bench: setup
	.venv/bin/python benchmarks/run.py
