#!/usr/bin/env bash
# Set up a fresh machine for edgebn: Debian cross toolchains and QEMU (when root), a venv with the
# CPU build of torch pinned to 2.13.0, and edgebn with its test extras. Idempotent: reruns are fast.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc gcc-xtensa-lx106 zstd)
if command -v apt-get >/dev/null 2>&1; then
    missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        if [ "$(id -u)" -eq 0 ]; then
            echo "setup: apt-get install ${missing[*]}"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        else
            echo "setup: not root; install these Debian packages for the emulated board: ${missing[*]}" >&2
        fi
    fi
fi

# The ESP32 / ESP32-S3 cross compilers and QEMU cores, in a cache outside the clone
# (docs/TOOLCHAINS.md): unpacked in seconds from ../shared/toolchains when it holds the prebuilt
# tarballs, else built from Debian's sources (about an hour, once).
bash scripts/xtensa_toolchain.sh

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
if ! .venv/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
    .venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
# Test-only, pinned, without their declared dependencies:
# - tflite-micro: TFLite Micro's own interpreter, the outside oracle of tests/tflm_oracle.py; at run
#   time it needs flatbuffers, numpy and pyyaml, nothing else.
# - timm: real architectures (tests/timm_models.py, benchmarks/timm_coverage.py) with
#   pretrained=False. Its metadata pulls torchvision, which must never sit next to torch 2.13;
#   its data module imports pillow; huggingface_hub and safetensors are optional (weight downloads).
TEST_EXTRAS=(tflite-micro==0.dev20261023182759 timm==1.0.31 flatbuffers pyyaml pillow)
if ! .venv/bin/python -c 'import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in ("tflite_micro", "timm", "yaml", "flatbuffers", "PIL")))'; then
    .venv/bin/pip install -q --disable-pip-version-check --no-deps "${TEST_EXTRAS[@]}"
fi
.venv/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' \
    || { echo "setup: torch is no longer 2.13.0 after the test extras" >&2; exit 1; }
echo "setup: ready ($(.venv/bin/python -c 'import torch, edgebn; print("torch", torch.__version__, "edgebn", edgebn.__version__)'))"
