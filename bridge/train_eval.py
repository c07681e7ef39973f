"""``TrainEvalCallback``: the loop's own bookkeeping, as in fastai (always present, order -10)."""

from __future__ import annotations

import torch

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
        self.learn.n_epoch = 1

    def before_fit(self) -> None:
        learn = self.learn
        learn.epoch, learn.train_iter, learn.pct_train = 0, 0, 0.0
        learn.loss = torch.tensor(0.0)
        if hasattr(learn.model, "reset"):
            learn.model.reset()

    def before_train(self) -> None:
        learn = self.learn
        total = learn.n_train_total
        learn.pct_train = learn.epoch / learn.n_epoch if total is None else learn.epoch * learn.n_iter / total
        resumed = self.__dict__.pop("_resumed", None)
        if resumed is not None and resumed[0] == learn.epoch:  # resumed mid-epoch: keep the saved position
            learn.pct_train = resumed[1]
        learn.model.train()
        learn.training = True

    def keep_position(self) -> None:
        """The next ``before_train`` keeps ``pct_train`` (training resumes inside the epoch).

        Example:
            >>> cb = TrainEvalCallback(); cb.keep_position()
        """
        learn = getattr(self, "learn", None)
        if learn is not None:
            self.__dict__["_resumed"] = (learn.epoch, learn.pct_train)

    def before_validate(self) -> None:
        learn = self.learn
        learn.model.eval()
        learn.training = False

    def after_batch(self) -> None:
        learn = self.learn
        total = learn.n_train_total
        learn.pct_train += 1.0 / (learn.n_iter * learn.n_epoch if total is None else total)
        learn.train_iter += 1

    def state_dict(self) -> dict[str, float]:
        """Loop position, so a resumed fit continues its schedules where it stopped."""
        learn = self.learn
        return {"train_iter": int(learn.train_iter), "pct_train": float(learn.pct_train), "epoch": int(learn.epoch)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        learn = self.learn
        learn.train_iter, learn.pct_train = int(state["train_iter"]), float(state["pct_train"])
        self.__dict__["_resumed"] = (int(state.get("epoch", -1)), float(state["pct_train"]))
