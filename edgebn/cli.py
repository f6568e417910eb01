"""edgebn's command line (SPEC.md section 3). Every failure is one line naming its cause; --debug
shows the traceback."""
from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

# numpy's OpenBLAS on one thread (unless the user chose otherwise): a compile's matrix products are
# small, the host gcc of the stack measurement runs beside them, and on a shared 2-core machine a
# second BLAS thread spinning for work doubled the report's CPU seconds for no wall-clock gain
# (benchmarks/compile_time.md). Set before numpy loads OpenBLAS, which reads it once.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# numpy's huge pages off (unless the user chose otherwise; numpy reads it once, at import): numpy asks
# the kernel for transparent huge pages on every array of 4 MB or more, and a compile allocates and
# frees such arrays layer after layer, so the kernel zeroed fresh 2 MB pages each time: on mixnet_s
# 0.7-1.4 s of system time in each of calibrate and quantize, 0.1-0.3 s without (benchmarks/compile_time.md).
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")


def _keep_freed_memory() -> None:
    """glibc only: keep freed arrays in the process instead of returning them to the kernel (and
    faulting fresh zeroed pages in for the next stage's arrays of the same sizes). A compile frees and
    reallocates the same tensor sizes layer after layer (calibration, bias correction, emulator): with
    glibc's defaults every array of a few MB is an mmap and each stage re-faulted the pages the one
    before returned (mixnet_s: ~70k page faults, 1.5-2 s of system time in `quantize`). Arrays under
    32 MB come from the heap, which is trimmed only beyond 1 GB free; the peak resident size is the same.
    Elsewhere (musl, macOS) nothing is changed."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_top_pad, 64 << 20)


_keep_freed_memory()

import click  # noqa: E402
import numpy as np  # noqa: E402

from .errors import EdgebnError, input_file
from .quantize import PTQ_DEFAULTS as DEFAULTS
from .targets import TARGETS

CONTEXT = {"help_option_names": ["-h", "--help"]}


EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130   # docs/REFUSALS.md "Exit codes"


def _quiet_teardown() -> None:
    """After an interrupt, objects the interrupt left half-built (a ZipFile whose __init__ was cut
    short by SIGINT) may fail in their __del__ at exit; Python would print that as a traceback under
    'Exception ignored'. The one line 'edgebn: interrupted' has said what happened: drop the rest."""
    sys.unraisablehook = lambda unraisable: None


class _Group(click.Group):
    """Turns EdgebnError (and a few well-known user errors) into a one-line message, exit 1; click's
    usage errors (a missing option, a bad choice, no such command) into one line too, exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "edgebn"
            click.echo(f"edgebn: error: {' '.join(e.format_message().split())} (see '{where} --help')", err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as e:   # e.g. a bad file for click.Path, raised before invoke
            click.echo(f"edgebn: error: {' '.join(e.format_message().split())}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("edgebn: interrupted", err=True)
            _quiet_teardown()
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(rv if isinstance(rv, int) else EXIT_OK)

    def invoke(self, ctx):
        debug = bool(ctx.params.get("debug"))
        restore = _sigterm_as_interrupt()
        try:
            return super().invoke(ctx)
        except (click.UsageError, click.exceptions.Exit, click.Abort):
            raise
        except click.ClickException as e:  # a command's own failure: the same one-line form as the rest
            if debug:
                raise
            click.echo(f"edgebn: error: {' '.join(e.format_message().split())}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("edgebn: interrupted", err=True)
            _quiet_teardown()
            sys.exit(130)
        except EdgebnError as e:
            if debug:
                raise
            click.echo(f"edgebn: error: {' '.join(str(e).split())}", err=True)
            sys.exit(1)
        except (OSError, ValueError, MemoryError) as e:
            if debug:
                raise
            click.echo(f"edgebn: error: {type(e).__name__}: {_first_line(e)} (--debug for the traceback)", err=True)
            sys.exit(1)
        except Exception as e:  # a bug in edgebn or a library: still one line, never a traceback
            if debug:
                raise
            click.echo(f"edgebn: internal error: {type(e).__name__}: {_first_line(e)} (a bug: please report it "
                       "with the output of --debug)", err=True)
            sys.exit(1)
        finally:
            restore()


def _sigterm_as_interrupt():
    """SIGTERM unwinds like Ctrl-C (so the compiler removes its temporary directory); returns a
    function restoring the previous handler."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@click.group(cls=_Group, context_settings=CONTEXT)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="edgebn")
def main(debug: bool) -> None:
    """Compile BatchNorm CNNs from PyTorch into bit-exact int8 C for ESP32-class boards."""
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, *a, **k: f"edgebn: warning: {msg}\n"


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated integers like 1,3,32,32") from None
    if not dims or min(dims) <= 0:
        raise click.BadParameter(f"{text!r}: dimensions must be positive")
    return dims


@main.command("compile", context_settings=CONTEXT)
@click.argument("model_pt2", required=False, type=click.Path(dir_okay=False))
@click.option("--calib", required=True, type=click.Path(dir_okay=False),
              help="Calibration inputs: float32 .npy/.npz, model layout, leading batch axis.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output project directory.")
@click.option("--target", default="qemu-rv32", show_default=True,
              type=click.Choice(list(TARGETS)))
@click.option("--model", "model_spec", help="pkg.module:Factory building the nn.Module (instead of a .pt2).")
@click.option("--weights", type=click.Path(dir_okay=False), help="state_dict for --model (loaded weights_only).")
@click.option("--input-shape", help="Input shape for --model, e.g. 1,3,32,32.")
@click.option("--calibration", default=DEFAULTS["calibration"], show_default=True,
              type=click.Choice(["auto", "minmax", "minmax_clip", "percentile", "mse", "histogram"]),
              help="How activation ranges are chosen; auto: histogram, minmax_clip or minmax with AdaRound, "
              "whichever scores higher on held-out calibration rows (small models; docs/QUANTIZATION.md).")
@click.option("--percentile", default=99.99, show_default=True, help="Percentile for --calibration percentile.")
@click.option("--weight-method", default=DEFAULTS["weight_method"], show_default=True, type=click.Choice(["max", "mse"]),
              help="Per-channel weight scale: max |w| or the MSE-minimizing clip.")
@click.option("--ranges", "ranges_path", type=click.Path(dir_okay=False, exists=True),
              help="Activation ranges JSON (from edgebn.qat) used instead of calibrating.")
@click.option("--bias-correction/--no-bias-correction", default=DEFAULTS["bias_correction"], show_default=True,
              help="Correct each layer's int32 bias for the mean error int8 adds (measured with the emulator).")
@click.option("--equalize/--no-equalize", default=DEFAULTS["equalize"], show_default=True,
              help="Cross-layer equalization of conv/linear pairs before calibration.")
@click.option("--fold-pool/--no-fold-pool", default=DEFAULTS["fold_pool"], show_default=True,
              help="Fold a global average pool into the linear after it (finer logits, bigger linear), within "
              "--fold-pool-budget.")
@click.option("--fold-pool-budget", type=click.FloatRange(min=0), default=DEFAULTS["fold_pool_budget"],
              show_default=True, help="--fold-pool folds a pool only if that adds at most this fraction of the "
              "model's weights (inf: no limit).")
@click.option("--pool-mean/--no-pool-mean", default=DEFAULTS["pool_mean"], show_default=True,
              help="A global average pool not folded is TFLite's MEAN with its own output scale (finer pooled "
              "values, no flash); otherwise an int8 pool keeping its input's scale.")
@click.option("--adaround/--no-adaround", default=DEFAULTS["adaround"],
              help="Learn whether each int8 weight rounds up or down (AdaRound, on the calibration data; "
              "docs/QUANTIZATION.md). Default: as --calibration auto chooses; off with a given --calibration.")
@click.option("--force", is_flag=True,
              help="Write into OUT even if it is not an earlier edgebn output (every file already there is kept).")
@click.option("--name", "lib_name", help="C name of the model library: prefixes every symbol, macro and file "
              "(kws -> lib/kws/kws_model.h, kws_run, KWS_INPUT_SIZE). Default: from the checkpoint's name.")
@click.option("--labels", "labels_path", type=click.Path(dir_okay=False),
              help="Class labels, one per line, one per output element: NAME_labels[] in the library.")
@click.option("--max-samples", type=click.IntRange(1), help="Use at most this many calibration samples "
              "(the report says how many were used).")
@click.option("--precision", default="int8", show_default=True, type=click.Choice(["int8", "int16", "auto"]),
              help="Activation width: int8; int16 (TFLite's int16x8 on every layer whose op has it); auto (the fewest "
              "layers raised to int16 for --min-sqnr). docs/QUANTIZATION.md.")
@click.option("--min-sqnr", type=float, help="--precision auto: every layer's accumulated SQNR target, dB "
              "[default: 25].")
@click.option("--int16-layers", help="Comma-separated layer names computed in int16 (any --precision).")
@click.option("--int16-tail/--no-int16-tail", default=DEFAULTS["int16_tail"], show_default=True,
              help="Compute the classifier tail (a linear head and the global mean or linear computing its input) "
              "in int16 (TFLite's int16x8; the output stays int8), where RAM and flash allow. docs/QUANTIZATION.md.")
@click.option("--quiet", "-q", is_flag=True, help="No table, no progress bar.")
def compile_cmd(model_pt2, calib, out_dir, target, model_spec, weights, input_shape, calibration, percentile,
                weight_method, ranges_path, bias_correction, equalize, fold_pool, fold_pool_budget, pool_mean, adaround,
                force, lib_name, labels_path, max_samples,
                precision, min_sqnr, int16_layers, int16_tail, quiet):
    """Compile MODEL_PT2 (or --model/--weights) into a PlatformIO project in OUT."""
    from .compiler import compile_model
    from .library import check_name, load_labels
    from .report import format_table

    t0 = time.perf_counter()
    if lib_name is not None:
        check_name(lib_name)  # a bad --name is refused before the checkpoint is read
    labels = load_labels(labels_path) if labels_path else None
    if bool(model_pt2) == bool(model_spec):
        raise click.UsageError("give either MODEL_PT2 or --model (with --weights and --input-shape)")
    if model_spec:
        if not input_shape:
            raise click.UsageError("--model needs --input-shape")
        from .importer import import_checkpoint
        model = import_checkpoint(model_spec, weights, _shape(input_shape))
        name = model_spec.split(":")[-1]
    else:
        model, name = model_pt2, Path(model_pt2).stem
    compiled = compile_model(model, calib, out_dir, target=target, calibration=calibration,
                             percentile=percentile, weight_method=weight_method, ranges=ranges_path,
                             bias_correction=bias_correction, equalize=equalize, fold_pool=fold_pool,
                             fold_pool_budget=fold_pool_budget, pool_mean=pool_mean, adaround=adaround, force=force,
                             progress=not quiet, model_name=name, name=lib_name, labels=labels,
                             max_samples=max_samples, precision=precision, min_sqnr=min_sqnr,
                             int16_layers=[t.strip() for t in int16_layers.split(",") if t.strip()]
                             if int16_layers else None, int16_tail=int16_tail)
    if not quiet:
        click.echo(format_table(compiled.report))
    for line in compiled.commit.messages() if compiled.commit else ():
        click.echo(f"edgebn: note: {line}", err=True)
    lib = compiled.report.get("library", {}).get("dir", "lib/edgebn_model")
    click.echo(f"wrote {out_dir} ({time.perf_counter() - t0:.2f} s): {lib}/ (the model library), platformio.ini, "
               f"report.json, report.html")


@main.command("emulate", context_settings=CONTEXT)
@click.argument("out_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False))
@click.option("--dequantize", is_flag=True, help="Write float32 outputs instead of raw int8.")
@click.option("--channels-last", is_flag=True, help="Inputs/outputs in device (NHWC) layout.")
def emulate_cmd(out_dir, input_path, output_path, dequantize, channels_last):
    """Run inputs through the bit-exact int8 emulator of a compiled model. A model with several
    outputs writes an .npz archive with one array per output (output0, output1, ...)."""
    from .emulator import Emulator

    emu = Emulator.load(out_dir)
    input_path = input_file(input_path, "--input")
    try:
        x = np.load(input_path, allow_pickle=False)
    except Exception as e:
        raise EdgebnError(f"{input_path}: cannot read input ({str(e).splitlines()[0]})") from None
    several = emu.num_outputs > 1
    if several and str(output_path).lower().endswith(".npy"):
        raise EdgebnError(f"-o {output_path}: the model has {emu.num_outputs} outputs; give an .npz path (one "
                          f"archive holding output0..output{emu.num_outputs - 1})")
    ys = emu.predict_all(x, channels_last=channels_last, dequantize=dequantize)
    from .fsio import save_npy, save_npz

    # exactly OUTPUT (np.save would append .npy), whole or not at all
    if several:
        save_npz(output_path, {f"output{k}": y for k, y in enumerate(ys)}, compressed=False)
        click.echo(f"wrote {output_path}: " + ", ".join(f"output{k} {y.dtype} {tuple(y.shape)}" for k, y in enumerate(ys)))
    else:
        save_npy(output_path, ys[0])
        click.echo(f"wrote {output_path}: {ys[0].dtype} {tuple(ys[0].shape)}")


def _register_device_commands() -> None:
    from .device.commands import compare
    from .device.flash import flash_command
    from .device.bench import bench
    from .evaluate import evaluate_command

    main.add_command(compare, "compare")
    main.add_command(flash_command, "flash")
    main.add_command(evaluate_command, "evaluate")
    main.add_command(bench, "bench")


_register_device_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
