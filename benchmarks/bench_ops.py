"""Pooling and activations per backend."""

from xpcnn import functional as F

from ._common import BACKENDS, random, sync, xp_or_skip


class Pooling:
    params = (BACKENDS, ["max", "avg"])
    param_names = ["backend", "kind"]

    def setup(self, backend, kind):
        self.xp = xp_or_skip(backend)
        self.x = random(self.xp, (32, 64, 56, 56))
        self.fwd = F.max_pool2d if kind == "max" else F.avg_pool2d
        self.bwd = F.max_pool2d_backward if kind == "max" else F.avg_pool2d_backward
        self.dy = random(self.xp, (32, 64, 28, 28))

    def time_pool2d(self, backend, kind):
        self.fwd(self.x, 2)
        sync(self.xp)

    def time_pool2d_backward(self, backend, kind):
        self.bwd(self.dy, self.x, 2)
        sync(self.xp)


class Activations:
    params = (BACKENDS, ["relu", "leaky_relu", "sigmoid", "tanh"])
    param_names = ["backend", "op"]

    def setup(self, backend, op):
        self.xp = xp_or_skip(backend)
        self.x = random(self.xp, (32, 64, 56, 56))
        self.op = getattr(F, op)

    def time_activation(self, backend, op):
        self.op(self.x)
        sync(self.xp)
