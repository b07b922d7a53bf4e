"""Global settings of xpcnn.

Plain module attributes: set them directly.

Examples
--------
>>> from xpcnn import config
>>> config.workspace_bytes // 2**20  # MiB
256
>>> config.workspace_bytes = 64 * 2**20  # smaller chunks of the batch, less memory
"""

#: Upper bound, in bytes, on the temporary buffers one convolution or pooling
#: call may allocate beyond its output (an im2col matrix, a padded copy of a
#: batch chunk). Larger batches are processed in chunks that fit.
workspace_bytes: int = 256 * 2**20

#: Whether ``conv2d(..., algo="auto")`` times its candidate algorithms on the
#: first call with each geometry (shapes, stride, padding, dilation, groups),
#: dtype and device, and then runs the fastest, like PyTorch's
#: ``torch.backends.cudnn.benchmark = True``. Off by default: the algorithms
#: differ in rounding, so which one wins a trial changes a result's last bits
#: from one process to the next (a seeded ``xpcnn train`` gave 98.67% and
#: 98.44% test accuracy in two runs). Off, ``"auto"`` follows a fixed rule
#: (``xpcnn.functional.rule_algo``) and a seed gives the same bits every run.
conv_autotune: bool = False
