"""One PTQ peer on one benchmark case, run inside that peer's own virtualenv (benchmarks/peers_env.sh).

    <venv>/bin/python benchmarks/peer_runner.py TOOL CASE_DIR

CASE_DIR (written by benchmarks/peers.py) holds model.pt (the eval-mode nn.Module, pickled by
peers.py itself), calib.npy and x.npy (float32, model layout). The quantized model's outputs on x go
to CASE_DIR/out_TOOL.npy, and a one-line JSON summary (seconds, notes) to stdout. TOOL:

  torchao_pt2e   torch.export -> torchao prepare_pt2e with XNNPACKQuantizer (per-channel symmetric
                 int8 weights, HistogramObserver int8 activations), calibrate, convert_pt2e; run the
                 converted (quantize/dequantize) model in torch.
  nncf           nncf.quantize with its defaults (preset PERFORMANCE: symmetric activations, per-channel
                 weights, fast bias correction)
                 over the same calibration set (subset_size = all of it); run the returned model.
  aimet          AIMET's recommended PTQ: fold_all_batch_norms, equalize_model (CLE), QuantizationSimModel
                 with the per-channel config and post_training_tf_enhanced, compute_encodings.
  aimet_adaround the same plus Adaround (AdaroundParameters over the calibration batches) before
                 compute_encodings.
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BATCH = 32


def batches(x: np.ndarray, bs: int = BATCH):
    for i in range(0, len(x), bs):
        yield torch.from_numpy(np.ascontiguousarray(x[i:i + bs]))


def run_fixed_batch(fn, x: np.ndarray, bs: int = BATCH) -> np.ndarray:
    """fn takes exactly bs samples (an exported program has a static batch): pad the last batch."""
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), bs):
            b = x[i:i + bs]
            n = len(b)
            if n < bs:
                b = np.concatenate([b, np.repeat(b[-1:], bs - n, axis=0)])
            outs.append(fn(torch.from_numpy(np.ascontiguousarray(b))).detach().numpy()[:n])
    return np.concatenate(outs).astype(np.float32)


def torchao_pt2e(model, calib, x):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.testing.pt2e._xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config

    example = torch.from_numpy(np.ascontiguousarray(calib[:BATCH]))
    gm = torch.export.export(model, (example,)).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(gm, quantizer)
    run_fixed_batch(prepared, calib)
    converted = convert_pt2e(prepared)
    return run_fixed_batch(converted, x), "torchao " + _version("torchao")


def nncf_ptq(model, calib, x):
    import nncf

    data = nncf.Dataset([b for b in batches(calib, 1)])      # one sample per item, as NNCF counts them
    q = nncf.quantize(model, data, subset_size=len(calib))
    with torch.no_grad():
        return np.concatenate([q(b).numpy() for b in batches(x)]), "nncf " + _version("nncf")


def _aimet(model, calib, x, adaround: bool):
    import os

    import aimet_torch
    from aimet_torch.batch_norm_fold import fold_all_batch_norms
    from aimet_torch.common.defs import QuantScheme
    from aimet_torch.cross_layer_equalization import equalize_model
    from aimet_torch.quantsim import QuantizationSimModel

    config = os.path.join(os.path.dirname(aimet_torch.__file__), "common", "quantsim_config",
                          "default_config_per_channel.json")
    shape = (1,) + tuple(calib.shape[1:])
    dummy = torch.zeros(shape)
    fold_all_batch_norms(model, input_shapes=shape)
    equalize_model(model, input_shapes=shape)
    calib_batches = list(batches(calib))

    def forward(m, _=None):
        with torch.no_grad():
            for b in calib_batches:
                m(b)

    if adaround:
        from aimet_torch.adaround.adaround_weight import Adaround, AdaroundParameters

        tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"aimet_adaround_{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        params = AdaroundParameters(data_loader=calib_batches, num_batches=len(calib_batches),
                                    default_num_iterations=ADAROUND_ITERATIONS)
        model = Adaround.apply_adaround(model, dummy, params, path=str(tmp), filename_prefix="ada",
                                        default_param_bw=8, default_quant_scheme=QuantScheme.post_training_tf_enhanced,
                                        default_config_file=config)
        sim = QuantizationSimModel(model, dummy_input=dummy, quant_scheme=QuantScheme.post_training_tf_enhanced,
                                   default_param_bw=8, default_output_bw=8, config_file=config)
        sim.set_and_freeze_param_encodings(encoding_path=str(tmp / "ada.encodings"))
    else:
        sim = QuantizationSimModel(model, dummy_input=dummy, quant_scheme=QuantScheme.post_training_tf_enhanced,
                                   default_param_bw=8, default_output_bw=8, config_file=config)
    sim.compute_encodings(forward, None)
    with torch.no_grad():
        out = np.concatenate([sim.model(b).numpy() for b in batches(x)])
    return out, "aimet-torch " + _version("aimet-torch")


ADAROUND_ITERATIONS = 2000


def aimet(model, calib, x):
    return _aimet(model, calib, x, adaround=False)


def aimet_adaround(model, calib, x):
    out, v = _aimet(model, calib, x, adaround=True)
    return out, f"{v}, AdaRound {ADAROUND_ITERATIONS} iterations per layer"


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


TOOLS = {"torchao_pt2e": torchao_pt2e, "nncf": nncf_ptq, "aimet": aimet, "aimet_adaround": aimet_adaround}


def main(argv=None) -> int:
    tool, case = (argv or sys.argv[1:])[:2]
    case = Path(case)
    torch.manual_seed(0)
    model = torch.load(case / "model.pt", weights_only=False).eval()   # written by peers.py on this machine
    calib = np.load(case / "calib.npy")
    x = np.load(case / "x.npy")
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, note = TOOLS[tool](model, calib, x)
    np.save(case / f"out_{tool}.npy", np.asarray(out, np.float32))
    print(json.dumps({"tool": tool, "seconds": round(time.perf_counter() - t, 2), "version": note}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
