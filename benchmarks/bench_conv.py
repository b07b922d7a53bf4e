"""Convolution forward and backward per algorithm, shape, dtype and backend."""

from xpcnn import functional as F

from ._common import BACKENDS, SHAPES, random, sync, xp_or_skip


class ConvForward:
    params = (BACKENDS, list(SHAPES), list(F.ALGOS), ["float32", "float64"])
    param_names = ["backend", "shape", "algo", "dtype"]
    timeout = 120

    def setup(self, backend, shape, algo, dtype):
        self.xp = xp_or_skip(backend)
        N, C, H, W, O, K, s, p = SHAPES[shape]
        self.x = random(self.xp, (N, C, H, W), dtype, 0)
        self.w = random(self.xp, (O, C, K, K), dtype, 1)
        self.kw = dict(stride=s, padding=p, algo=algo)
        F.conv2d(self.x, self.w, **self.kw)  # warm-up: plans, kernel compilation on CuPy
        sync(self.xp)

    def time_conv2d(self, backend, shape, algo, dtype):
        F.conv2d(self.x, self.w, **self.kw)
        sync(self.xp)


class ConvBackward:
    params = (BACKENDS, list(SHAPES), ["float32"])
    param_names = ["backend", "shape", "dtype"]
    timeout = 120

    def setup(self, backend, shape, dtype):
        self.xp = xp_or_skip(backend)
        N, C, H, W, O, K, s, p = SHAPES[shape]
        self.x = random(self.xp, (N, C, H, W), dtype, 0)
        self.w = random(self.xp, (O, C, K, K), dtype, 1)
        self.kw = dict(stride=s, padding=p)
        y = F.conv2d(self.x, self.w, **self.kw)
        self.dy = random(self.xp, y.shape, dtype, 2)
        F.conv2d_backward(self.dy, self.x, self.w, **self.kw)
        sync(self.xp)

    def time_conv2d_backward(self, backend, shape, dtype):
        F.conv2d_backward(self.dy, self.x, self.w, **self.kw)
        sync(self.xp)


class ConvPeakMem:
    """Peak memory of a large-batch conv: chunking keeps temporaries under the workspace."""

    params = ([a for a in F.ALGOS if a != "auto"],)
    param_names = ["algo"]
    timeout = 300

    def setup(self, algo):
        xp = xp_or_skip("numpy")
        self.x = random(xp, (256, 32, 32, 32), "float32", 0)  # 32 MiB input; unchunked im2col: 288 MiB
        self.w = random(xp, (64, 32, 3, 3), "float32", 1)

    def peakmem_conv2d(self, algo):
        F.conv2d(self.x, self.w, padding=1, algo=algo)
