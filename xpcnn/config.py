"""Global settings of xpcnn.

Plain module attributes: set them directly, e.g.
``xpcnn.config.workspace_bytes = 64 * 2**20``.
"""

#: Upper bound, in bytes, on the temporary buffers one convolution or pooling
#: call may allocate beyond its output (an im2col matrix, a padded copy of a
#: batch chunk). Larger batches are processed in chunks that fit.
workspace_bytes: int = 256 * 2**20

#: Threads for host-side element-wise ops and pooling on NumPy (NumPy itself
#: runs each of them on one core; BLAS has its own threads). ``None``: the
#: environment variable ``XPCNN_NUM_THREADS`` if set, else every core this
#: process may use. ``1`` runs everything on the calling thread.
num_threads: int | None = None
