"""Global settings of xpcnn.

Plain module attributes: set them directly, e.g.
``xpcnn.config.workspace_bytes = 64 * 2**20``.
"""

#: Upper bound, in bytes, on the temporary buffers one convolution or pooling
#: call may allocate beyond its output (an im2col matrix, a padded copy of a
#: batch chunk). Larger batches are processed in chunks that fit.
workspace_bytes: int = 256 * 2**20
