"""GDAL's approximate ``a / sqrt(b)``, bit for bit, for the hillshades.

``gdaldem hillshade`` (GDAL 3.6, x86-64) divides by a square root with the
SSE ``rsqrtss`` instruction (a 12-bit estimate of ``1 / sqrt(b)`` from the
float32 of ``b``) and one Newton-Raphson step in float64.  The estimate is
the processor's own, so rdask calls the same instruction (an LLVM intrinsic)
rather than an exact root: with an exact root about one pixel in 10,000 is a
grey level off.  On other processors GDAL divides by ``sqrt(b)``, and so
does this.
"""

from __future__ import annotations

import math
import platform

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


@intrinsic
def _rsqrt_ss(typingctx, x):
    """``rsqrtss``: the processor's estimate of ``1 / sqrt(x)`` for a float32."""
    if not isinstance(x, types.Float) or x.bitwidth != 32:
        return None

    def codegen(context, builder, sig, args):
        vec = ir.VectorType(ir.FloatType(), 4)
        zero = ir.Constant(ir.IntType(32), 0)
        packed = builder.insert_element(ir.Constant(vec, ir.Undefined), args[0], zero)
        fn = builder.module.declare_intrinsic(
            "llvm.x86.sse.rsqrt.ss", fnty=ir.FunctionType(vec, [vec])
        )
        return builder.extract_element(builder.call(fn, [packed]), zero)

    return types.float32(types.float32), codegen


if _X86:

    @njit(nogil=True, cache=True, inline="always")
    def a_div_sqrt_b(a: float, b: float) -> float:
        """``a / sqrt(b)`` as GDAL's ``ApproxADivByInvSqrtB`` computes it."""
        r = np.float64(_rsqrt_ss(np.float32(b)))
        r = r * (1.5 - (b * 0.5) * (r * r))
        return a * r

else:  # pragma: no cover - GDAL's portable branch

    @njit(nogil=True, cache=True, inline="always")
    def a_div_sqrt_b(a: float, b: float) -> float:
        """``a / sqrt(b)``, as GDAL computes it without SSE."""
        return a / math.sqrt(b)
