"""``TrainEvalCallback``: the loop's own bookkeeping, as in fastai (always present, order -10)."""

from __future__ import annotations

from .callback import Callback

__all__ = ["TrainEvalCallback"]


class TrainEvalCallback(Callback):
    """Keeps ``training``, ``train_iter``, ``pct_train`` and the model's train/eval mode.

    Added to every Learner (like fastai's); it runs before other callbacks (order -10),
    so their ``after_batch`` already sees the incremented ``train_iter``.

    Example:
        >>> TrainEvalCallback.order
        -10
    """

    order = -10
    run_valid = False

    def after_create(self) -> None:
        self.learn.n_epoch = 1  # type: ignore[union-attr]

    def before_fit(self) -> None:
        learn = self.learn
        assert learn is not None
        learn.train_iter, learn.pct_train = 0, 0.0
        if learn.stage == "fit":
            learn.epoch = learn.trainer.current_epoch if learn.trainer is not None else 0
            # A resumed fit starts part-way: keep the schedule position.
            learn.train_iter = learn.epoch * max(learn.n_iter_per_epoch(), 0)
            learn.pct_train = learn.epoch / learn.n_epoch
        if hasattr(learn.model, "reset"):
            learn.model.reset()

    def before_train(self) -> None:
        learn = self.learn
        assert learn is not None
        learn.pct_train = learn.epoch / learn.n_epoch
        learn.model.train()
        learn.training = True

    def before_validate(self) -> None:
        learn = self.learn
        assert learn is not None
        learn.model.eval()
        learn.training = False

    def after_batch(self) -> None:
        learn = self.learn
        assert learn is not None
        learn.pct_train += 1.0 / (learn.n_iter * learn.n_epoch)
        learn.train_iter += 1
