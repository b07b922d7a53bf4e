"""End-to-end: the tutorial's chelsea pipeline, and one training step of the digits CNN."""

import numpy as np

from xpcnn import backend, tutorial

from ._common import BACKENDS, sync, xp_or_skip


class TutorialPipeline:
    """The three conv -> ReLU -> pool layers of ``xpcnn demo`` on chelsea (float64, as the tutorial)."""

    params = (BACKENDS,)
    param_names = ["backend"]

    def setup(self, name):
        self.xp = xp_or_skip(name)
        try:
            from xpcnn.commands.demo import load_image, tutorial_filters
        except ImportError as exc:  # scikit-image is the demo extra
            raise NotImplementedError(f"needs xpcnn[demo]: {exc}") from None
        self.img = self.xp.asarray(load_image("chelsea"))
        self.banks = [self.xp.asarray(b) for b in tutorial_filters(seed=0)]
        tutorial.pipeline(self.img, self.banks)

    def time_pipeline(self, name):
        tutorial.pipeline(self.img, self.banks)
        sync(self.xp)


class DigitsTrainStep:
    """Forward, backward and an Adam step of ``xpcnn train``'s digits CNN on a batch of 64."""

    params = (BACKENDS,)
    param_names = ["backend"]

    def setup(self, name):
        self.xp = xp_or_skip(name)
        from xpcnn.models import digits_cnn
        from xpcnn.losses import SoftmaxCrossEntropy
        from xpcnn.optim import Adam

        with backend.use(name):
            self.model = digits_cnn(seed=0)
        rng = np.random.default_rng(0)
        self.x = self.xp.asarray(rng.random((64, 1, 8, 8), dtype=np.float32))
        self.y = self.xp.asarray(rng.integers(0, 10, 64))
        self.loss = SoftmaxCrossEntropy()
        self.opt = Adam(1e-3)
        self.time_step(name)

    def time_step(self, name):
        self.loss(self.model.forward(self.x, training=True), self.y)
        self.model.backward(self.loss.backward())
        self.opt.step(self.model)
        sync(self.xp)
