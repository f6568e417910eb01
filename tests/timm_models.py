"""timm's MCU-class BN-CNNs, built without torchvision and with calibrated BatchNorm statistics.

timm (installed by scripts/setup.sh with --no-deps) imports torchvision at module level in a few
places that model creation never uses: its data pipeline (transforms, datasets, subclassing
`transforms.ToTensor`) and `FrozenBatchNorm2d` for fine-tuning helpers. torchvision must not be
installed next to torch 2.13, so `import_timm()` imports timm with a placeholder `torchvision` package
in sys.modules whose every name is a class that raises ImportError when instantiated, then removes the
placeholder again (timm keeps the names it bound; nothing else can import it afterwards). Model
creation (`pretrained=False`) never touches those names; anything that does fails loudly.

    model = create("mobilenetv3_small_050", input_size=64)     # eval mode, BN statistics calibrated
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

import torch

from zoo_real import calibrate_bn

__all__ = ["import_timm", "create", "MCU_NETS"]

# BN-CNN architectures in timm that fit an MCU at small inputs (the issue-10 list)
MCU_NETS = (
    "mobilenetv3_small_050", "mobilenetv3_small_100", "mobilenetv3_large_075", "lcnet_050", "lcnet_100",
    "mnasnet_small", "mnasnet_050", "ghostnet_050", "ghostnet_100", "ghostnetv2_100", "regnety_002",
    "regnetx_002", "mixnet_s", "efficientnet_lite0", "mobilenetv4_conv_small", "tinynet_e", "semnasnet_050",
    "hardcorenas_a", "repghostnet_050", "mobileone_s0", "spnasnet_100", "fbnetc_100", "mobilenetv2_035",
    "mobilenetv1_100", "resnet10t", "resnet18", "dla46_c",
)


def _placeholder(qualname: str) -> type:
    class _Meta(type):
        def __getattr__(cls, name):             # InterpolationMode.BILINEAR and the like
            if name.startswith("__"):
                raise AttributeError(name)
            return _placeholder(f"{qualname}.{name}")

    def __init__(self, *args, **kwargs):
        raise ImportError(f"{qualname} is not available: torchvision is not installed (edgebn's test "
                          "environment builds timm models without it)")

    return _Meta(qualname.rsplit(".", 1)[-1], (), {"__init__": __init__, "__qualname__": qualname})


class _Module(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _placeholder(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        m = _Module(spec.name)
        m.__path__ = []
        return m

    def exec_module(self, module):
        pass


def import_timm():
    """Import timm without torchvision (see the module docstring)."""
    if "timm" in sys.modules:
        return sys.modules["timm"]
    if importlib.util.find_spec("torchvision") is not None:
        import timm
        return timm
    finder = _Finder()
    sys.meta_path.insert(0, finder)
    try:
        import timm
        import timm.models  # noqa: F401  (every model module registers itself here)
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
    return timm


def create(name: str, input_size: int = 64, num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
    """A timm model with random weights (pretrained=False), BN statistics calibrated on structured
    inputs (zoo_real.calibrate_bn), in eval mode."""
    timm = import_timm()
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    return calibrate_bn(model, (3, input_size, input_size), seed=seed)
