"""conv2d through ESP-NN (KernelRecord.library "esp-nn"): esp_nn_conv_s8 and esp_nn_depthwise_conv_s8.

ESP-NN computes TFLite's int8 conv numerics (SPEC.md section 1) with the arguments TFLite Micro's
ESP glue passes: in_offset = -Z_in, out_offset = Z_out, per-channel (mult, shift) = edgebn's
(m0, shift), the fused clamp as activation min/max, padding taps skipped (= adding Z_in * w).
Its kernels take no dilation and no grouped convolution on the S3, so those layers keep edgebn's
kernel. Weights: conv OHWI as edgebn stores them; depthwise [KH, KW, C * mult] (TFLite's layout).
The S3 kernels need a scratch buffer whose size only ESP-NN knows (esp_nn_get_*_scratch_size, which
depends on the chip and the ESP-NN version): the generated C asks every such layer at the first run
and allocates the largest once, or checks a static buffer of -D<PREFIX>_ESP_NN_SCRATCH_BYTES.
Templates (this folder): esp_nn_conv.c.j2, esp_nn_dwconv.c.j2.
"""
from __future__ import annotations

from ...ir import Graph, Node, image_view
from ..base import KernelRecord


def _shape(node: Node, g: Graph):
    h, w, cin = image_view(g.shapes[node.inputs[0]])
    oh, ow, cout = image_view(g.shapes[node.name])
    _, kh, kw, cg = node.params["weight"].shape
    return h, w, cin, oh, ow, cout, kh, kw, cg


def _why_not(node: Node, g: Graph) -> str | None:
    a = node.attrs
    if tuple(a["dilation"]) != (1, 1):
        return "dilated"
    h, w, cin, oh, ow, cout, kh, kw, cg = _shape(node, g)
    if max(h, w, cin, oh, ow, cout, kh, kw) > 65535:
        return "dimensions past ESP-NN's uint16"
    return None


def _applies_conv(node: Node, g: Graph) -> str | None:
    if _why_not(node, g) or node.attrs["groups"] != 1:
        return None
    return "ESP-NN esp_nn_conv_s8 (PIE SIMD on the ESP32-S3)"


def _applies_dw(node: Node, g: Graph) -> str | None:
    h, w, cin, oh, ow, cout, kh, kw, cg = _shape(node, g)
    if _why_not(node, g) or cg != 1 or node.attrs["groups"] != cin or node.attrs["groups"] == 1:
        return None
    return "ESP-NN esp_nn_depthwise_conv_s8 (PIE SIMD on the ESP32-S3)"


def _context(node: Node, g: Graph) -> dict:
    h, w, cin, oh, ow, cout, kh, kw, cg = _shape(node, g)
    wt = node.params["weight"]
    dw = cg == 1 and node.attrs["groups"] == cin and node.attrs["groups"] != 1
    return {"esp_nn_weight": wt.transpose(1, 2, 0, 3).reshape(kh, kw, cout) if dw else wt,
            "esp_nn_mult": cout // cin if dw else 1,
            "esp_nn_scratch": True}


CONV = KernelRecord("esp_nn_conv", "conv2d/esp_nn_conv.c.j2", _applies_conv, _context,
                    constants=("esp_nn_weight", "bias", "m0", "shift"), library="esp-nn")
DWCONV = KernelRecord("esp_nn_dwconv", "conv2d/esp_nn_dwconv.c.j2", _applies_dw, _context,
                      constants=("esp_nn_weight", "bias", "m0", "shift"), library="esp-nn")
EXTERNAL = (CONV, DWCONV)

__all__ = ["EXTERNAL"]
