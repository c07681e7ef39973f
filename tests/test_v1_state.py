"""fastai v1 callbacks: the keyword state they are given, and the flags they return, against a plain loop.

fastai v1 called every method with its whole state (``cb.on_batch_end(**state)``); the wrapper
passes a method only the names it can read (``bridge.dialects.reads``). These tests hold that to
fastai v1's behaviour: what each kind of signature sees equals what the whole state holds, and
flags returned by methods that read nothing act exactly as in fastai v1's loop, written out here
over the same batches.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bridge.dialects.common import V1_ARGUMENTS
from bridge.dialects.reads import keywords_read, narrow_call
from tests.helpers import make_data, make_learner, make_model

KEYS = ("last_loss", "iteration", "num_batch", "train", "epoch", "smooth_loss", "last_output", "last_target")


# -- which names a method can read -----------------------------------------------------------------
def _decorated(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


class Shapes:
    def named(self, last_loss: Any, train: Any, **kwargs: Any) -> None: ...
    def keyword_only(self, *, epoch: Any, smooth_loss: Any = None, **kwargs: Any) -> None: ...
    def after_other(self, other: Any = 1, last_loss: Any = None, **kwargs: Any) -> None: ...
    def star_args(self, *args: Any, train: Any, **kwargs: Any) -> None: ...
    def nothing(self, **kwargs: Any) -> None: ...
    def reads(self, **kwargs: Any) -> Any:
        return kwargs["train"]

    def passes_on(self, last_loss: Any, **kwargs: Any) -> Any:
        return self.nothing(**kwargs)

    def captures(self, **kwargs: Any) -> Any:
        return lambda: kwargs

    def in_comprehension(self, **kwargs: Any) -> Any:
        return [kwargs for _ in range(1)]

    def frame(self, **kw: Any) -> Any:
        return locals()

    def debugger(self, last_loss: Any, **kwargs: Any) -> None:
        breakpoint()  # never called: only its code is read

    def pdb(self, **kwargs: Any) -> None:
        import pdb

        pdb.set_trace()

    def frame_by_name(self, **kwargs: Any) -> Any:
        import sys

        return getattr(sys, "_getframe")(0).f_code  # noqa: B009

    def frame_in_nested(self, **kwargs: Any) -> Any:
        import sys

        return lambda: sys._getframe(1)

    def ordinary(self, last_output: Any, **kwargs: Any) -> Any:
        model = self
        model.eval()  # an attribute named like a builtin is not the builtin
        return torch.stack([last_output])

    def no_var_keyword(self, last_loss: Any) -> None: ...
    def positional_only(self, last_loss: Any, /, **kwargs: Any) -> None: ...
    @staticmethod
    def static(train: Any, **kwargs: Any) -> None: ...

    decorated = _decorated(nothing)


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("named", (("last_loss", "train"), True)),
        ("keyword_only", (("epoch", "smooth_loss"), False)),
        ("after_other", (("last_loss",), False)),  # `other` is not a state name: its default stays
        ("star_args", (("train",), False)),
        ("nothing", ((), True)),
        ("static", (("train",), True)),
        # everything, as fastai v1 passed it:
        ("reads", None),
        ("passes_on", None),
        ("captures", None),
        ("in_comprehension", None),
        ("frame", None),
        ("debugger", None),
        ("pdb", None),
        ("frame_by_name", None),
        ("frame_in_nested", None),
        ("ordinary", (("last_output",), True)),
        ("no_var_keyword", None),  # fastai v1's call raised TypeError: so must ours
        ("positional_only", None),
        ("decorated", None),
    ],
)
def test_keywords_read(method: str, expected: Any) -> None:
    assert keywords_read(getattr(Shapes(), method), V1_ARGUMENTS) == expected


def test_keywords_read_refuses_what_is_not_a_function() -> None:
    assert keywords_read(print, V1_ARGUMENTS) is None
    assert keywords_read(functools.partial(Shapes.nothing, Shapes()), V1_ARGUMENTS) is None

    class CallableObject:
        def __call__(self, **kwargs: Any) -> None: ...

    assert keywords_read(CallableObject(), V1_ARGUMENTS) is None


def test_narrow_call_passes_the_state_values() -> None:
    state = {"last_loss": 0.5, "train": True, "epoch": 2, "smooth_loss": 0.25}

    def two(last_loss: Any, train: Any, **kwargs: Any) -> Any:
        return last_loss, train, kwargs

    def kw(*, epoch: Any, smooth_loss: Any, **kwargs: Any) -> Any:
        return epoch, smooth_loss, kwargs

    assert narrow_call(two, ("last_loss", "train"), True)(state) == (0.5, True, {})
    assert narrow_call(kw, ("epoch", "smooth_loss"), False)(state) == (2, 0.25, {})
    assert narrow_call(lambda last_loss, **k: last_loss, ("last_loss",), True)(state) == 0.5


# -- what each signature sees in a fit -------------------------------------------------------------
class Everything:
    """Reads the whole state (the call fastai v1 made)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def on_batch_begin(self, **kwargs: Any) -> None:
        self.seen.append(("begin", {k: kwargs[k] for k in KEYS}))

    def on_batch_end(self, **kwargs: Any) -> None:
        self.seen.append(("end", {k: kwargs[k] for k in KEYS}))


class Named:
    """The same names as leading parameters (positional call)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def on_batch_begin(self, last_loss, iteration, num_batch, train, epoch, smooth_loss, last_output, last_target,
                       **kwargs: Any) -> None:  # fmt: skip
        self.seen.append(("begin", dict(zip(KEYS, (last_loss, iteration, num_batch, train, epoch, smooth_loss,
                                                   last_output, last_target), strict=True))))  # fmt: skip

    def on_batch_end(self, last_loss, iteration, num_batch, train, epoch, smooth_loss, last_output, last_target,
                     **kwargs: Any) -> None:  # fmt: skip
        self.seen.append(("end", dict(zip(KEYS, (last_loss, iteration, num_batch, train, epoch, smooth_loss,
                                                 last_output, last_target), strict=True))))  # fmt: skip


class KeywordOnly:
    """The same names as keyword-only parameters, in another order (keyword call)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def on_batch_begin(self, *, train, last_target, epoch, last_output, smooth_loss, iteration, last_loss, num_batch,
                       **kwargs: Any) -> None:  # fmt: skip
        self.seen.append(("begin", dict(train=train, last_target=last_target, epoch=epoch, last_output=last_output,
                                        smooth_loss=smooth_loss, iteration=iteration, last_loss=last_loss,
                                        num_batch=num_batch)))  # fmt: skip

    def on_batch_end(self, *, train, last_target, epoch, last_output, smooth_loss, iteration, last_loss, num_batch,
                     **kwargs: Any) -> None:  # fmt: skip
        self.seen.append(("end", dict(train=train, last_target=last_target, epoch=epoch, last_output=last_output,
                                      smooth_loss=smooth_loss, iteration=iteration, last_loss=last_loss,
                                      num_batch=num_batch)))  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    return bool(a == b)


def test_every_signature_sees_the_state_fastai_v1_passed(tmp_path: Path) -> None:
    everything, named, keyword_only = Everything(), Named(), KeywordOnly()
    assert keywords_read(everything.on_batch_end, V1_ARGUMENTS) is None  # the whole state, as fastai v1
    assert keywords_read(named.on_batch_end, V1_ARGUMENTS) == (KEYS, True)  # a positional call of 8
    assert sorted(keywords_read(keyword_only.on_batch_end, V1_ARGUMENTS)[0]) == sorted(KEYS)  # type: ignore[index]
    cbs = [everything, named, keyword_only]
    learn = make_learner(tmp_path, data=make_data(n=96, n_valid=64, bs=32, shuffle=False), cbs=cbs)
    learn.fit(2, lr=0.1)
    loop = learn.cb_handler.show_training_loop()  # what learn.show_training_loop() prints
    assert "Everything" in loop and "V1Flags" not in loop and "V1Prelude" not in loop  # the dialect's own helpers
    assert len(everything.seen) == 2 * 2 * (3 + 2)  # 2 epochs x (3 train + 2 valid batches) x begin/end
    for other in (named, keyword_only):
        for (ea, a), (eb, b) in zip(everything.seen, other.seen, strict=True):
            assert ea == eb and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in KEYS), (ea, a, b)

    # Independent figures: fastai v1's counters, the loss of the output, the debiased EMA (beta 0.98).
    train_ends = [s for e, s in everything.seen if e == "end" and s["train"]]
    assert [s["iteration"] for s in train_ends] == list(range(6))
    assert [s["num_batch"] for e, s in everything.seen if e == "end"] == [0, 1, 2, 0, 1] * 2
    assert [s["epoch"] for s in train_ends] == [0, 0, 0, 1, 1, 1]
    ema, n = 0.0, 0
    for event, s in everything.seen:
        if event == "end" and s["train"]:
            expected = F.cross_entropy(s["last_output"].detach(), s["last_target"])
            assert float(s["last_loss"]) == pytest.approx(float(expected))
            ema, n = 0.98 * ema + 0.02 * float(s["last_loss"]), n + 1
        # fastai v1's handler averaged the loss in at on_backward_begin, before its callbacks: the
        # current training batch from then on; the last training batch's in validation.
        assert float(s["smooth_loss"]) == pytest.approx(ema / (1 - 0.98**n) if n else 0.0, rel=1e-5), (event, n)


def test_a_method_without_var_keyword_fails_as_in_fastai_v1(tmp_path: Path) -> None:
    class Strict:
        def on_batch_end(self, last_loss: Any) -> None: ...

    with pytest.raises(TypeError, match="unexpected keyword argument"):
        make_learner(tmp_path, cbs=[Strict()]).fit(1)


# -- flags from methods that read nothing, against fastai v1's loop --------------------------------
class Flags:
    """Returns fastai v1's flags at fixed training batches; only ``on_batch_begin`` reads the state."""

    def __init__(self) -> None:
        self.i = -1  # the training batch of the fit
        self.epoch = -1
        self.train = False

    def on_epoch_begin(self, **kwargs: Any) -> dict[str, Any] | None:
        self.epoch += 1
        if self.epoch == 2:  # fastai v1 cleared stop_training *before* on_epoch_begin: it holds
            return {"stop_training": True}
        return {"skip_validate": True} if self.epoch == 1 else None

    def on_batch_begin(self, train: bool, **kwargs: Any) -> dict[str, Any] | None:
        self.train = train
        if train:
            self.i += 1
        # fastai v1 cleared the batch's flags before on_batch_begin: this one holds for the batch.
        return {"skip_step": True} if train and self.i == 4 else None

    def on_backward_begin(self, **kwargs: Any) -> dict[str, Any] | None:
        return {"skip_bwd": True} if self.train and self.i == 1 else None

    def on_backward_end(self, **kwargs: Any) -> dict[str, Any] | None:
        return {"skip_step": True} if self.train and self.i == 2 else None

    def on_step_end(self, **kwargs: Any) -> dict[str, Any] | None:
        return {"skip_zero": True} if self.train and self.i == 3 else None

    def on_batch_end(self, **kwargs: Any) -> dict[str, Any] | None:
        return {"stop_epoch": True} if self.train and self.i == 5 else None

    def on_epoch_end(self, **kwargs: Any) -> dict[str, Any] | None:
        return {"stop_training": True} if self.epoch == 3 else None  # never reached: stopped after epoch 2


def _sgd(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr)


def _fastai_v1_loop(model: nn.Module, batches: list[Any], lr: float) -> int:
    """fastai v1's ``fit``/``loss_batch`` with the flags ``Flags`` returns; the training batches run."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    i = -1
    for epoch in range(4):
        for xb, yb in batches:
            i += 1
            loss = F.cross_entropy(model(xb), yb)
            if i != 1:  # skip_bwd
                loss.backward()
            if i not in (2, 4):  # skip_step (from on_backward_end, from on_batch_begin)
                opt.step()
            if i != 3:  # skip_zero
                opt.zero_grad()
            if i == 5:  # stop_epoch
                break
        if epoch == 2:  # stop_training (from on_epoch_begin)
            break
    return i + 1


def test_flags_returned_by_methods_that_read_nothing_act_as_in_fastai_v1(tmp_path: Path) -> None:
    flags = Flags()
    assert keywords_read(flags.on_backward_end, V1_ARGUMENTS) == ((), True)
    data = make_data(n=256, n_valid=64, bs=32, shuffle=False)
    validated: list[int] = []

    class ValidBatches:
        def after_pred(self) -> None:
            if not self.learn.training:
                validated.append(self.learn.epoch)

    learn = make_learner(tmp_path, data=data, model=make_model(), cbs=[flags, ValidBatches()], opt_func=_sgd)
    learn.fit(4, lr=0.1)
    reference = make_model()
    n_batches = _fastai_v1_loop(reference, list(data.train_dl), lr=0.1)
    assert n_batches == 6 + 8 + 8 and flags.i == n_batches - 1  # epoch 0 stopped after batch 5; fit after epoch 2
    assert validated == [
        0,
        0,
    ]  # skip_validate from epoch 1's on_epoch_begin holds for the rest (fastai v1 never resets it)
    for p, q in zip(learn.model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-7)
