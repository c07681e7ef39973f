"""fastai v2's control flow, transcribed from ``fastai/learner.py`` (2.8), without any training.

The golden-trace tests run the same callback through this reference and through the
Lightning-backed Learner and compare the event traces. Only the structure is kept:
``_with_events``, ``_do_fit``, ``_do_epoch``, ``all_batches``, ``_do_one_batch``.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge import (
    CancelBackwardException,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CancelStepException,
    CancelTrainException,
    CancelValidException,
)


def _noop() -> None:
    pass


class ReferenceLoop:
    def __init__(self, fire: Callable[[ReferenceLoop, str], None], n_epoch: int, n_train: int, n_valid: int) -> None:
        self.fire, self.n_epoch, self.n_train, self.n_valid = fire, n_epoch, n_train, n_valid
        self.epoch, self.iter, self.training = 0, 0, False

    def __call__(self, name: str) -> None:
        self.fire(self, name)

    def _with_events(self, f: Callable[[], None], event_type: str, ex: type[Exception]) -> None:
        try:
            self(f"before_{event_type}")
            f()
        except ex:
            self(f"after_cancel_{event_type}")
        self(f"after_{event_type}")

    def fit(self) -> None:
        self._with_events(self._do_fit, "fit", CancelFitException)

    def _do_fit(self) -> None:
        for epoch in range(self.n_epoch):
            self.epoch = epoch
            self._with_events(self._do_epoch, "epoch", CancelEpochException)

    def _do_epoch(self) -> None:
        self.training, self.n_iter = True, self.n_train
        self._with_events(self.all_batches, "train", CancelTrainException)
        self.training, self.n_iter = False, self.n_valid
        self._with_events(self.all_batches, "validate", CancelValidException)

    def all_batches(self) -> None:
        for i in range(self.n_iter):
            self.iter = i
            self._with_events(self._do_one_batch, "batch", CancelBatchException)

    def _do_one_batch(self) -> None:
        self("after_pred")
        self("after_loss")
        if not self.training:
            return
        self._with_events(_noop, "backward", CancelBackwardException)
        self._with_events(_noop, "step", CancelStepException)
