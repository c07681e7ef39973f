"""The fastai batch, written once: training and validation, one process or DDP, Learner or adapter.

fastai's ``_do_one_batch``, with each level opened and closed through :class:`~bridge.levels.Levels`::

    before_batch -> pred = model(*xb) -> after_pred -> loss_grad = loss_func(pred, *yb); loss = clone
    -> after_loss -> before_backward -> backward(loss_grad) -> after_backward
    -> before_step -> [agree] -> opt.step() -> after_step -> zero_grad -> after_batch

A training batch without targets stops after ``after_loss``, as in fastai. What is the host's
(how the batch splits, how the model is called, how backward and the step run) comes in a
:class:`BatchOps`. ``before_step`` fires from :meth:`BatchEngine.before_step`, which the host
calls at the point where its gradients are unscaled (Lightning's ``on_before_optimizer_step``).

Under DDP (``levels.sync`` set) a rank whose batch was cancelled before backward still meets
the gradient all-reduce with a backward that adds nothing, and every rank agrees once per
batch, before the optimizer step: the one agreement point of the policy in :mod:`bridge.levels`.
In one process both are skipped at their first test.

Example:
    >>> import torch
    >>> from bridge.host import CallbackHost
    >>> from bridge.levels import Levels
    >>> learn = CallbackHost()
    >>> learn.model, learn.loss_func = torch.nn.Linear(2, 1), torch.nn.functional.mse_loss
    >>> levels = Levels(learn); levels.open.extend(["fit", "epoch", "validate"])
    >>> ops = BatchOps(learn)
    >>> BatchEngine(learn, levels).valid_batch((torch.ones(4, 2), torch.zeros(4, 1)), 0, ops)
    >>> tuple(learn.pred.shape), learn.loss.shape
    ((4, 1), torch.Size([]))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor

from .exceptions import CancelException

if TYPE_CHECKING:
    from .levels import Levels
    from .protocol import LoopState

__all__ = ["NO_STEP", "BatchEngine", "BatchOps", "StepAborted", "split_batch"]

#: Agreed votes after which no rank may take the optimizer step.
NO_STEP = frozenset({"step", "batch", "validate", "train", "epoch", "fit"})


class StepAborted(Exception):
    """Raised from the step's hook to abort an optimizer step that must not run.

    Example:
        >>> issubclass(StepAborted, Exception)
        True
    """


def split_batch(batch: Any, n_inp: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """fastai's split of a batch: the first ``n_inp`` elements are inputs, the rest targets.

    Example:
        >>> split_batch((1, 2, 3), 2)
        ((1, 2), (3,))
        >>> split_batch("x", 1)
        (('x',), ())
    """
    if isinstance(batch, (list, tuple)):
        return tuple(batch[:n_inp]), tuple(batch[n_inp:])
    return (batch,), ()


class BatchOps:
    """What the engine asks of its host in a batch; the Learner's module and the adapter override parts.

    The defaults are fastai's: ``model(*xb)``, ``loss_func(pred, *yb)``, ``loss_grad.backward()``.

    Example:
        >>> from bridge.host import CallbackHost
        >>> host = CallbackHost()
        >>> BatchOps(host).split((1, 2))
        >>> host.xb, host.yb
        ((1,), (2,))
    """

    def __init__(self, learn: LoopState) -> None:
        self.learn = learn

    def split(self, batch: Any) -> None:
        learn = self.learn
        if isinstance(batch, (list, tuple)):  # split_batch, inline: this runs every batch
            n = learn.n_inp
            learn.xb, learn.yb = tuple(batch[:n]), tuple(batch[n:])
        else:
            learn.xb, learn.yb = (batch,), ()

    def predict(self) -> Any:
        """The model's output; an op that fires ``after_pred`` itself returns ``engine.set_pred(...)``."""
        learn = self.learn
        return learn.model(*learn.xb)

    def loss(self) -> Tensor | None:
        """The loss of this batch (None: there is none, e.g. no targets)."""
        learn = self.learn
        return compute_loss(learn) if learn.yb else None

    def backward(self, target: Tensor) -> None:
        target.backward()  # type: ignore[no-untyped-call]

    def zero_backward(self) -> None:
        """Under DDP: a backward that adds nothing, so this rank still meets the gradient all-reduce."""

    def step(self) -> None:
        """Step the optimizer; the host calls ``engine.before_step()`` where grads are final."""
        opt = self.learn.opt
        assert opt is not None  # the hosts create it before the first batch
        opt.step()

    def scaler_skipped(self) -> bool:
        """True when an fp16 GradScaler skipped the step it was just asked for (inf/nan grads)."""
        return False

    def zero_grad(self) -> None:
        opt = self.learn.opt
        assert opt is not None
        opt.zero_grad()

    def drop_grads(self) -> None:
        """Clear every gradient of the batch (after some rank's backward carried nothing)."""
        opt = self.learn.opt
        if opt is not None:
            opt.zero_grad(set_to_none=True)

    def aborted(self) -> None:
        """The step was aborted after the host began it (e.g. undo a GradScaler's unscale)."""


def compute_loss(learn: LoopState) -> Tensor:
    """``learn.loss_func(pred, *yb)``; a function that cannot be called so, or returns no tensor, is named.

    Example:
        >>> import torch
        >>> from bridge.host import CallbackHost
        >>> learn = CallbackHost(); learn.loss_func = lambda pred, y: 1.0
        >>> learn.pred, learn.yb = torch.zeros(1), (torch.zeros(1),)
        >>> compute_loss(learn)
        Traceback (most recent call last):
        ...
        TypeError: Learner: `loss_func` must return a tensor, got float
    """
    try:
        loss = learn.loss_func(learn.pred, *learn.yb)
    except TypeError as exc:
        raise TypeError(
            f"Learner: `loss_func`(pred, *yb) raised TypeError: {exc}; it must be callable as loss_func(pred, *yb)"
        ) from exc
    if not isinstance(loss, Tensor):
        raise TypeError(f"Learner: `loss_func` must return a tensor, got {type(loss).__name__}")
    return loss


class BatchEngine:
    """One host's batches: the fastai batch over :class:`~bridge.levels.Levels`.

    Example:
        >>> from bridge.host import CallbackHost
        >>> from bridge.levels import Levels
        >>> learn = CallbackHost(); engine = BatchEngine(learn, Levels(learn))
        >>> engine.train_batch(None, 0, BatchOps(learn)) is None  # no train level open: a no-op
        True
    """

    def __init__(self, learn: LoopState, levels: Levels) -> None:
        self.learn = learn
        self.levels = levels
        self._pred_fired = False
        #: Whether this batch has a loss (fastai: no targets, no backward and no step).
        self.has_loss = True

    # -- the phases -----------------------------------------------------------------------------
    def set_pred(self, pred: Any) -> Any:
        """``pred`` becomes ``learn.pred``; ``after_pred`` fires; returns what callbacks left there."""
        learn = self.learn
        learn.pred = pred
        self._pred_fired = True
        learn.cb_handler("after_pred")
        return learn.pred

    def forward(self, ops: BatchOps, then: str) -> None:
        """Open the batch and run it to ``after_loss``; ``then`` opens ``backward`` or closes ``batch``."""
        levels, learn = self.levels, self.learn
        levels.open_level("batch")
        self._pred_fired = False
        pred = ops.predict()
        if not self._pred_fired:  # set_pred, inline
            learn.pred = pred
            learn.cb_handler("after_pred")
        loss = ops.loss()
        self.has_loss = loss is not None
        if loss is not None:
            learn.loss_grad = loss
            learn.loss = loss.clone()
        learn.cb_handler("after_loss")
        if then == "batch":
            levels.close_level("batch")
        elif loss is not None:  # fastai: no targets, no backward and no step
            levels.open_level("backward")

    def backward_target(self) -> Any:
        """What backward uses: ``loss_grad``, exactly as fastai 2.8 (``loss`` is what is logged and measured)."""
        return self.learn.loss_grad

    def before_step(self, ops: BatchOps) -> None:
        """``before_step`` and, under DDP, the batch's agreement; raises :class:`StepAborted` if no step."""
        levels = self.levels
        if levels.deferred is None:
            try:
                levels.open_level("step")
            except CancelException as exc:
                levels.handle(exc)
        if levels.sync is not None and self.agree(ops) & NO_STEP:
            raise StepAborted()
        stack = levels.open
        if not stack or stack[-1] != "step":
            raise StepAborted()

    def agree(self, ops: BatchOps) -> set[str]:
        """The batch's agreement point (nothing in one process)."""
        agreed = self.levels.agree()
        if "zero_grad" in agreed or "backward" in agreed:
            ops.drop_grads()  # some rank's backward carried nothing: drop the batch's gradients everywhere
        return agreed

    # -- whole batches ----------------------------------------------------------------------------
    def train_batch(self, batch: Any, batch_idx: int, ops: BatchOps) -> Tensor | None:
        """One training batch (the Learner's ``training_step``); returns the detached loss."""
        # The phases are guarded inline (``Levels.handle``) rather than through ``Levels.guard``:
        # this runs every batch, and a closure per phase is measurable there.
        levels, learn = self.levels, self.learn
        stack = levels.open
        if levels.deferred is None:
            if not stack or stack[-1] != "train":
                return None  # closed on every rank alike: nobody runs backward
            learn.iter = batch_idx
            ops.split(batch)
            try:
                self.forward(ops, "backward")
            except CancelException as exc:
                levels.handle(exc)
        if levels.deferred is None and stack and stack[-1] == "backward":
            ops.backward(self.backward_target())
            try:
                levels.close_level("backward")
            except CancelException as exc:
                levels.handle(exc)
        elif levels.sync is not None and self.has_loss:
            ops.zero_backward()
            levels.votes.add("zero_grad")
        stepped = False
        if levels.deferred is None and stack and stack[-1] == "batch" and self.has_loss:
            try:
                ops.step()  # before_step and the agreement run from the step's hook
                stepped = True
            except StepAborted:
                ops.aborted()
            except BaseException:
                ops.aborted()
                raise
            if stepped and ops.scaler_skipped():  # inf grads are all-reduced: every rank skips alike
                levels.fire("after_cancel_step")
        elif levels.sync is not None:
            self.agree(ops)
        if levels.deferred is None:
            try:
                if stepped:
                    levels.close_level("step")
                if stack and stack[-1] == "batch" and self.has_loss:
                    ops.zero_grad()
                levels.close_level("batch")
            except CancelException as exc:
                levels.handle(exc)
        loss = learn.loss
        return loss.detach() if isinstance(loss, Tensor) else None

    def valid_batch(self, batch: Any, batch_idx: int, ops: BatchOps) -> None:
        """One validation batch: to ``after_loss``, then ``after_batch``; a CancelBatch stays on its rank."""
        levels, learn = self.levels, self.learn
        if levels.deferred is not None or not levels.innermost("validate"):
            return
        learn.iter = batch_idx
        ops.split(batch)
        levels.guard(self.forward, ops, "batch", local="batch")

    # -- manual optimization: the module runs its own backward and optimizer steps ------------------
    def open_batch(self) -> None:
        """Open the batch (``before_batch``) of a step that calls ``manual_backward`` and steps itself."""
        self.levels.open_level("batch")
        self._pred_fired = False

    def manual_loss(self, loss: Tensor | None, backward: bool) -> None:
        """``loss`` becomes the batch's loss, ``after_loss`` fires; ``backward`` opens the backward of that loss.

        Called at each ``manual_backward(loss)`` of the step (``backward=True``), or once at its end
        when it ran none; backward then uses :meth:`backward_target` (what callbacks left in
        ``loss_grad``), as in :meth:`forward`.
        """
        learn = self.learn
        self.has_loss = loss is not None
        if loss is not None:
            learn.loss_grad = loss
            learn.loss = loss.clone()
        learn.cb_handler("after_loss")
        if backward and loss is not None:
            self.levels.open_level("backward")
