"""run / run_train / run_valid are honoured at the very call they govern, whatever writes them.

The dispatcher keeps who runs at each batch-level event until a run flag is written
(docs/design.md, "order, run, run_train, run_valid"); these tests change the flags in every way
a callback can and count the calls against what fastai's rule (flags read at each call) gives.
"""

from __future__ import annotations

from typing import Any

from bridge import Callback
from bridge.handler import EventDispatch
from tests.helpers import make_data, make_learner


class Phase:
    """The dispatcher's ``training`` source, switched by the test."""

    def __init__(self) -> None:
        self.training = True

    def __call__(self) -> bool:
        return self.training


class Count(Callback):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name_, self.log = name, log

    def after_batch(self) -> None:
        self.log.append(self.name_)


def dispatch(*cbs: Any) -> tuple[EventDispatch, Phase]:
    phase = Phase()
    return EventDispatch(cbs, training=phase), phase


def test_a_callback_muting_a_later_one_mutes_it_in_the_same_event() -> None:
    log: list[str] = []
    later = Count("later", log)

    class Muter(Callback):
        def after_batch(self) -> None:
            log.append("muter")
            if len(log) > 2:
                later.run = False

    d, _ = dispatch(Muter(), later)
    for _ in range(3):
        d("after_batch")
    assert log == ["muter", "later", "muter", "muter"]  # muted from its own turn of the second batch


def test_a_callback_unmuting_a_later_one_runs_it_in_the_same_event() -> None:
    log: list[str] = []
    later = Count("later", log)
    later.run_train = False

    class Unmuter(Callback):
        def after_batch(self) -> None:
            log.append("unmuter")
            if len(log) == 2:  # second batch
                later.run_train = True

    d, _ = dispatch(Unmuter(), later)
    for _ in range(3):
        d("after_batch")
    assert log == ["unmuter", "unmuter", "later", "unmuter", "later"]


def test_self_muting_and_deleting_a_flag_take_effect_at_the_next_call() -> None:
    log: list[str] = []

    class TrainTwice(Count):
        run_train = True

        def after_batch(self) -> None:
            super().after_batch()
            if len(self.log) == 2:
                self.run_train = False  # instance flag over the class's

    cb = TrainTwice("cb", log)
    d, _ = dispatch(cb)
    for _ in range(4):
        d("after_batch")
    assert log == ["cb", "cb"]
    del cb.run_train  # the class's True shows through again
    d("after_batch")
    assert log == ["cb", "cb", "cb"]


def test_the_phase_picks_run_train_or_run_valid_at_each_call() -> None:
    log: list[str] = []

    class TrainOnly(Count):
        run_valid = False

    d, phase = dispatch(TrainOnly("t", log), Count("both", log))
    for training in (True, False, False, True):
        phase.training = training
        d("after_batch")
    assert log == ["t", "both", "both", "both", "t", "both"]


def test_flags_that_change_without_a_write_are_read_at_each_call() -> None:
    log: list[str] = []
    switch = {"on": True}

    class ByProperty(Count):
        @property
        def run_train(self) -> bool:  # type: ignore[override]
            return switch["on"]

    class Untracked(Count):  # its own __setattr__: writes are not reported
        def __setattr__(self, name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

    class ByValue(Count):
        pass

    truthy: list[int] = [1]
    by_value = ByValue("value", log)
    by_value.run = truthy  # type: ignore[assignment]  # a list: emptied below without a write
    untracked = Untracked("untracked", log)
    # One dispatcher each: the checks hold per callback, not only beside the others.
    ds = [dispatch(ByProperty("property", log))[0], dispatch(untracked)[0], dispatch(by_value)[0]]
    for d in ds:
        d("after_batch")
    switch["on"] = False
    untracked.run = False
    truthy.clear()
    for d in ds:
        d("after_batch")
    assert log == ["property", "untracked", "value"]


def test_a_plain_object_muted_by_another_callback_is_muted_at_once() -> None:
    log: list[str] = []

    class Plain:  # duck-typed, as the article's callbacks: no base class
        def after_batch(self) -> None:
            log.append("plain")

    plain = Plain()

    class Muter(Callback):
        def after_batch(self) -> None:
            log.append("muter")
            plain.run = False  # type: ignore[attr-defined]

    d, _ = dispatch(Muter(), plain)
    d("after_batch")
    d("after_batch")
    assert log == ["muter", "muter"]


def test_a_class_level_flag_change_holds_from_the_next_phase_level_event() -> None:
    log: list[str] = []

    class Cls(Count):
        pass

    cb = Cls("cb", log)
    d, _ = dispatch(cb)
    d("after_batch")
    Cls.run_train = False  # on the class: no instance write to report
    d("after_batch")  # within the phase: who runs was read at its first batch (the documented rule)
    d("after_train")  # any fit-, epoch- or phase-level event reads the flags again
    d("after_batch")
    object.__setattr__(cb, "run_train", True)  # around Callback.__setattr__: the same rule
    d("before_validate")
    d("after_batch")
    assert log == ["cb", "cb", "cb"]


def test_a_class_turned_untracked_is_read_at_each_call_from_the_next_phase() -> None:
    log: list[str] = []
    switch = {"on": True}

    class Cls(Count):
        pass

    class Live(Count):
        @property
        def run_train(self) -> bool:  # type: ignore[override]
            return switch["on"]

    a, b = Cls("a", log), Cls("b", log)
    d, _ = dispatch(a, b)
    d("after_batch")
    Cls.run_train = property(lambda self: switch["on"])  # type: ignore[assignment]
    b.__class__ = Live  # type: ignore[assignment]
    d("before_validate")
    d("after_batch")
    switch["on"] = False  # no write anywhere: only per-call reads see it
    d("after_batch")
    assert log == ["a", "b", "a", "b"]


def test_callbacks_added_or_removed_between_batches_take_part_at_once() -> None:
    log: list[str] = []
    first, second = Count("first", log), Count("second", log)
    d, _ = dispatch(first)
    d("after_batch")
    d.add(second)
    d("after_batch")
    d.remove(first)
    d("after_batch")
    assert log == ["first", "first", "second", "second"]


def test_in_a_fit_a_callback_stopping_after_two_batches_runs_twice_per_epoch(tmp_path: Any) -> None:
    class FirstTwo(Callback):
        def __init__(self) -> None:
            self.iters: list[tuple[int, int]] = []

        def before_epoch(self) -> None:
            self.run_train = True

        def after_batch(self) -> None:
            self.iters.append((self.epoch, self.iter))
            if self.iter == 1:
                self.run_train = False

    class Valid(Callback):
        run_train = False

        def __init__(self) -> None:
            self.n = 0

        def after_batch(self) -> None:
            self.n += 1

    first, valid = FirstTwo(), Valid()
    # 4 training and 2 validation batches per epoch; FirstTwo also runs on both validation batches.
    learn = make_learner(tmp_path, data=make_data(n=128, n_valid=64, bs=32), cbs=[first, valid])
    learn.fit(2)
    assert first.iters == [(0, 0), (0, 1), (0, 0), (0, 1), (1, 0), (1, 1), (1, 0), (1, 1)]
    assert valid.n == 2 * 2


def test_dialect_wrappers_and_loop_helpers_report_their_flag_writes(tmp_path: Any) -> None:
    from bridge.callback import tracks_run_flags

    log: list[str] = []

    class OldStyle:  # fastai v1: keyword state, no base class
        def on_batch_end(self, **kwargs: Any) -> None:
            log.append("v1")

    learn = make_learner(tmp_path, cbs=[OldStyle()])
    handler = learn.cb_handler
    wrapper = next(cb for cb in handler._cbs if getattr(cb, "wrapped", None) is not None)
    assert all(tracks_run_flags(cb) for cb in handler._cbs)  # wrapper, V1Prelude, V1Flags, the rest

    class Muter(Callback):
        order = wrapper.order - 1  # runs just before the wrapper

        def after_batch(self) -> None:
            log.append("muter")
            if log.count("muter") == 2:
                wrapper.run_train = False
            elif log.count("muter") == 3:
                object.__setattr__(wrapper, "run_train", True)  # the flag's own descriptor reports it too

    # The v1 callback with its helpers and the muter, without the Learner's own callbacks.
    d, _ = dispatch(Muter(), *(cb for cb in handler._cbs if getattr(cb, "loop_helper", False) or cb is wrapper))
    for _ in range(4):
        d("after_batch")
    assert log == ["muter", "v1", "muter", "muter", "v1", "muter", "v1"]
    del wrapper.run_train  # back to the class default, reported as well
    assert wrapper.run_train is True
