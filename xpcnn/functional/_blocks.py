"""Large host-side ops in cache-sized blocks.

NumPy runs a ufunc over its whole array before the next one starts, so an op
of several passes (the sigmoid has four, a 2x2 max pool four) streams the
array through main memory once per pass. The element-wise ops and pooling
here instead cut their arrays into blocks that fit the L2 cache and run all
passes on one block before the next: main memory is read and written once.
Results do not depend on the blocking: every output element is computed by
the same operations in the same order.

On a GPU nothing is cut: one launch per pass is cheaper there.

The blocks run one after another on the calling thread. Spreading them over
two threads was measured (2 cores, OpenBLAS): an op alone ran up to 1.7x
faster, but a LeNet training step ran 3-4% slower (ReLU and pooling right
after a matrix product 8% slower), because OpenBLAS's workers spin for about
0.1 s after every matrix product and take the second core.
"""

from __future__ import annotations

from typing import Callable

from ..backend import Array, get_array_module, is_device

#: Bytes of one block. 256 KiB to 1 MiB timed the same on large arrays on
#: an AVX2 machine (64 KiB cost more in calls, 4 MiB fell out of the cache).
#: On an AVX-512 one (1 MiB of L2, 32 MiB of L3 per 8 cores) 2 MiB was
#: 1.0-1.2x faster than 512 KiB on N32 C64 56x56, sigmoid 3% slower, and it
#: takes a LeNet-5 layer's pooling and ReLU in one block: its training step
#: ran 3% faster.
BLOCK_BYTES = 2 * 2**20


def for_blocks(fn: Callable[[int, int], None], n: int, block: int) -> None:
    """Call ``fn(lo, hi)`` on consecutive blocks ``[lo, hi)`` of at most `block` items covering ``range(n)``."""
    block = max(1, int(block))
    for lo in range(0, n, block):
        fn(lo, min(lo + block, n))


def elementwise(kernel: Callable, *inputs: Array, out: Array) -> Array:
    """``kernel(*input_blocks, out_block)`` over matching flat blocks; returns `out`.

    `kernel` writes ``f(inputs)`` into its last argument, element by element.
    Inputs must have `out`'s shape. Arrays laid out alike in memory (all
    C-contiguous, or all the same transpose of C-contiguous arrays, as
    ``empty_like`` makes for a transposed input) are cut into blocks in
    memory order; device arrays, arrays of one block or less and others go
    to `kernel` whole, in one call.
    """
    arrays = (*inputs, out)
    if is_device(get_array_module(out)) or out.nbytes <= BLOCK_BYTES:
        kernel(*arrays)
        return out
    # Element order does not matter here: read every array in out's memory order.
    axes = sorted(range(out.ndim), key=lambda i: -abs(out.strides[i]))
    arrays = [a.transpose(axes) for a in arrays]
    if not all(a.flags.c_contiguous for a in arrays):
        kernel(*arrays)
        return out
    flats = [a.reshape(-1) for a in arrays]
    for_blocks(lambda lo, hi: kernel(*(f[lo:hi] for f in flats)), out.size, BLOCK_BYTES // out.itemsize)
    return out


_zeros: dict = {}


def zeros_for(out: Array):
    """Zeros of `out`'s shape and dtype, as an input operand: shared, never to be written.

    NumPy's ``maximum`` runs about 4x faster on two arrays than on an array
    and a scalar, so ReLU compares with a block of zeros. Arrays larger than
    one block (only when unblocked) and device arrays get a scalar 0.
    """
    xp = get_array_module(out)
    if is_device(xp) or out.nbytes > BLOCK_BYTES:
        return out.dtype.type(0)
    z = _zeros.get(out.dtype)
    if z is None or z.size < out.size:
        z = _zeros[out.dtype] = xp.zeros(out.size, dtype=out.dtype)
        z.flags.writeable = False
    return z[: out.size].reshape(out.shape)
