#!/usr/bin/env bash
# The PTQ peers of benchmarks/peers.py, each in its own virtualenv outside the clone
# (EDGEBN_PEERS_DIR, default ~/.cache/edgebn-peers): torchao (PT2E), nncf, aimet (aimet-torch).
# torch is pinned to 2.13.0 and installed first in each; a peer that pins another torch goes in with
# --no-deps, then its own pure dependencies. Idempotent. Not part of `make test`.
set -euo pipefail
DIR=${EDGEBN_PEERS_DIR:-$HOME/.cache/edgebn-peers}
PY=${PYTHON:-python3.11}
PIP_FLAGS=(-q --disable-pip-version-check)
mkdir -p "$DIR"

venv() {   # venv NAME: a virtualenv with torch 2.13.0 (CPU) and numpy
    local v="$DIR/$1"
    [ -x "$v/bin/python" ] || "$PY" -m venv "$v"
    if ! "$v/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
        "$v/bin/pip" install "${PIP_FLAGS[@]}" torch==2.13.0 numpy
    fi
}

# torchao: PT2E prepare/convert with the XNNPACKQuantizer (it depends on nothing that pins torch)
venv torchao
"$DIR/torchao/bin/python" -c 'import torchao' 2>/dev/null || "$DIR/torchao/bin/pip" install "${PIP_FLAGS[@]}" torchao

# NNCF: nncf.quantize (its torch backend builds a small C++ extension on first use; needs g++)
venv nncf
"$DIR/nncf/bin/python" -c 'import nncf' 2>/dev/null || "$DIR/nncf/bin/pip" install "${PIP_FLAGS[@]}" nncf

# AIMET: aimet-torch requires torch and torchvision unpinned, and pip then replaces torch 2.13.0 with
# the newest (a CUDA build) plus torchvision: so --no-deps, then its pure dependencies. aimet_torch
# imports torchvision at module level (dataset helpers, ROI ops that PTQ of a CNN never calls); the
# venv gets a stand-in module instead of torchvision (edgebn's environments never install torchvision).
venv aimet
A="$DIR/aimet"
if ! "$A/bin/python" -c 'import aimet_torch' 2>/dev/null; then
    "$A/bin/pip" install "${PIP_FLAGS[@]}" --no-deps aimet-torch
    "$A/bin/pip" install "${PIP_FLAGS[@]}" Jinja2 PyYAML "bokeh<=3.6.3,>=3.3.0" cvxpy holoviews "hvplot>=0.10.0" \
        jsonschema "matplotlib>=3" networkx onnx "onnx_ir>=0.1.16" "onnxscript>=0.2.0" osqp pandas psutil pybind11 \
        safetensors scikit-learn scipy tensorboard tqdm
    SP=$("$A/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    mkdir -p "$SP/torchvision"
    cat > "$SP/torchvision/__init__.py" <<'EOF'
"""Stand-in for torchvision in edgebn's AIMET benchmark venv (not torchvision). aimet_torch imports
torchvision at module level for dataset helpers and ROI ops that post-training quantization of a
CNN never calls; the real torchvision pins another torch, and edgebn's environments never install it."""
import types


class _Unavailable:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("torchvision is not installed in this benchmark venv")


def _missing(*args, **kwargs):
    raise RuntimeError("torchvision is not installed in this benchmark venv")


ops = types.SimpleNamespace(RoIPool=_Unavailable, roi_align=_missing, nms=_missing)
transforms = types.SimpleNamespace(Resize=_Unavailable)
datasets = types.SimpleNamespace()
__version__ = "0.0.0+stub"
EOF
fi
for p in torchao nncf aimet; do
    "$DIR/$p/bin/python" -c "import torch; print('$p: torch', torch.__version__)"
done
