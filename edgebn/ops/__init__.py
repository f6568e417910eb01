"""The operator registry: `OPS[name]` and `ATEN_RULES[aten target]`.

Each operator is one package in this folder (its `OpDef` in `__init__.py`, its C kernels as `.c.j2`
beside it); importing it registers it. Adding an operator is one folder plus one line below; see
docs/ADDING_AN_OPERATOR.md.
"""
from .base import ATEN_RULES, OPS, AtenContext, KernelRecord, OpDef, QParams, Ref  # noqa: F401

from . import conv2d  # noqa: F401,E402
from . import linear  # noqa: F401,E402
from . import batch_norm  # noqa: F401,E402
from . import activation  # noqa: F401,E402
from . import add  # noqa: F401,E402
from . import cat  # noqa: F401,E402
from . import pad  # noqa: F401,E402
from . import pool  # noqa: F401,E402
from . import reshape  # noqa: F401,E402
from . import softmax  # noqa: F401,E402
from . import mul  # noqa: F401,E402
from . import affine  # noqa: F401,E402
from . import expand  # noqa: F401,E402
from . import upsample  # noqa: F401,E402
from . import slice  # noqa: F401,E402
from . import conv_transpose2d  # noqa: F401,E402
from . import conv3d  # noqa: F401,E402
from . import requantize  # noqa: F401,E402
from . import mean  # noqa: F401,E402

__all__ = ["OPS", "ATEN_RULES", "OpDef", "KernelRecord", "QParams", "Ref", "AtenContext", "layer_macs"]


def layer_macs(graph) -> dict[str, int]:
    """{node name: its op's multiply-accumulates on the graph's shapes} (OpDef.macs), in graph order."""
    return {n.name: int(OPS[n.op].macs(n, [graph.shapes[t] for t in n.inputs], graph.shapes[n.name]))
            for n in graph.nodes}
