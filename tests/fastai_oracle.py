"""Run the same fastai 2.8.12 callbacks on fastai's own ``Learner`` and on fastlight's, and compare.

fastai is the oracle: a case builds one model, deep-copies it for each side, and trains both
on the same tensors in the same order (no shuffling), CPU, SGD at the same learning rate (no
momentum, no weight decay: fastai's ``fastai.optimizer.SGD`` on its side, ``bridge.SGD`` (a
torch SGD stepping as fastai's) on fastlight's), no progress bar, no logger, no checkpoint. Each
side gets its own fresh callbacks (a factory builds them) and its own temporary ``path``.

Both Learners also run :class:`Tracer`, a ``fastai.callback.core.Callback`` subclass that logs
every event it sees with the loop state (epoch, iter, training). It runs right after fastai's
TrainEvalCallback at every event (``order = -10``, added after it) and, at each ``before_batch``, reseeds torch's RNG from (epoch, iter,
training): random callbacks (MixUp, CutMix, dropout) then draw the same numbers on both sides
whatever other RNG use the two loops make between batches (a torch ``DataLoader`` iterator
draws a seed when it starts).

:func:`run_case` returns both :class:`Outcome` s and the first difference between them:
the exception (type), the event trace, the final weights (state_dict, max abs diff
``ATOL``), ``recorder.values`` (relative ``RTOL`` or absolute ``ATOL``), the files written under
``path``, the action's result (e.g. what ``get_preds`` returns), the callbacks left on the
Learner afterwards (those given to one ``fit`` must be gone), then the case's own ``check``.

Example:
    >>> case = Case("plain fit")
    >>> run_case(case).diff is None
    True
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastai.callback.all  # noqa: F401  # every callback module, so fastai's defaults are all registered
import fastai.callback.core as fa_core
import fastai.learner as fa_learner
import fastai.optimizer as fa_optim
import torch
from fastai.callback.hook import HookCallback
from fastai.callback.progress import ProgressCallback
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader as FaDataLoader
from torch import Tensor, nn
from torch.utils.data import TensorDataset

import bridge

__all__ = [
    "ATOL",
    "EVENTS",
    "RTOL",
    "Case",
    "Comparison",
    "Keep",
    "NaNAt",
    "NormHook",
    "Outcome",
    "Resettable",
    "Setup",
    "ToyRNN",
    "Tracer",
    "accuracy",
    "check_attr",
    "compare",
    "first_result_diff",
    "hyper_lr",
    "raising",
    "rebind",
    "run_case",
    "run_fastai",
    "run_fastlight",
]

ATOL = 1e-6
#: For ``recorder.values``: fastai keeps the smoothed train loss in float32 tensors, fastlight in
#: Python floats, so the two agree to float32 precision (a few 1e-7 relative), not to 1e-6 absolute.
RTOL = 1e-5
#: fastai 2.8.12's event names, in its own order.
EVENTS: tuple[str, ...] = tuple(fa_core._events)
_INNER = frozenset(fa_core._inner_loop)
#: Default callbacks of either Learner, left out of ``Outcome.cbs_after``.
_DEFAULT_CBS = frozenset({"TrainEvalCallback", "Recorder", "CastToTensor", "ProgressCallback"})
#: Files a fastlight fit may leave that are not the callback's doing (none with the options used here).
_FASTLIGHT_OWN = ("checkpoints/", "lightning_logs/")

TraceItem = tuple[str, Any, Any, Any]


def accuracy(pred: Tensor, targ: Tensor) -> Tensor:
    """Share of rows whose arg-max is the target (the metric both Learners get by default).

    Example:
        >>> float(accuracy(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([1, 1])))
        0.5
    """
    return (pred.argmax(dim=-1) == targ).float().mean()


@dataclass(frozen=True)
class Setup:
    """The data and model of a case: ``n_train`` / ``n_valid`` items in batches of ``bs``.

    ``image=True`` gives inputs of shape ``(n, 1, side, side)`` (for CutMix) and a model that
    flattens them (after a 3x3 convolution with ``conv``); ``batchnorm`` adds a BatchNorm1d layer; ``dropout`` a Dropout layer;
    ``frozen_bn`` freezes the BatchNorm's parameters (for BnFreeze).
    """

    n_train: int = 48
    n_valid: int = 32
    bs: int = 16
    n_in: int = 4
    n_out: int = 3
    hidden: int = 8
    image: bool = False
    side: int = 4
    conv: bool = False
    batchnorm: bool = False
    frozen_bn: bool = False
    dropout: float = 0.0
    seed: int = 0

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        n = self.n_train + self.n_valid
        shape = (n, 1, self.side, self.side) if self.image else (n, self.n_in)
        x = torch.randn(*shape, generator=g)
        y = torch.randint(0, self.n_out, (n,), generator=g)
        return x[: self.n_train], y[: self.n_train], x[self.n_train :], y[self.n_train :]

    def model(self) -> nn.Module:
        torch.manual_seed(self.seed)
        n_in = self.side * self.side if self.image else self.n_in
        layers: list[nn.Module] = []
        if self.image and self.conv:
            layers.append(nn.Conv2d(1, 1, 3, padding=1))
        if self.image:
            layers.append(nn.Flatten())
        layers.append(nn.Linear(n_in, self.hidden))
        if self.batchnorm:
            layers.append(nn.BatchNorm1d(self.hidden))
        layers.append(nn.ReLU())
        if self.dropout:
            layers.append(nn.Dropout(self.dropout))
        layers.append(nn.Linear(self.hidden, self.n_out))
        model = nn.Sequential(*layers)
        if self.frozen_bn:
            for m in model.modules():
                if isinstance(m, nn.BatchNorm1d):
                    m.requires_grad_(False)
        return model


def _default_action(learn: Any, case: Case, fit_cbs: list[Any]) -> Any:
    return learn.fit(case.n_epoch, cbs=fit_cbs or None)


@dataclass
class Case:
    """One behaviour to check: callbacks, data, and what to do with the Learner.

    ``cbs(path)`` / ``fit_cbs(path)`` build fresh callbacks for the Learner's constructor /
    for ``fit(cbs=...)``, once per side (``path`` is that side's ``learn.path``).
    ``action(learn, case, fit_cbs)`` runs the job (default: ``learn.fit(n_epoch,
    cbs=fit_cbs)``); its result goes into ``Outcome.result`` and is compared.
    ``check(fastai_outcome, fastlight_outcome)`` may return a difference of its own (a
    string) or None. ``model`` replaces ``setup.model()``; ``loss_func()`` builds each
    side's loss; files under a prefix in ``ignore_files`` are not compared.
    """

    name: str
    cbs: Callable[[Path], list[Any]] = lambda path: []
    fit_cbs: Callable[[Path], list[Any]] = lambda path: []
    action: Callable[[Any, Case, list[Any]], Any] = _default_action
    check: Callable[[Outcome, Outcome], str | None] | None = None
    setup: Setup = field(default_factory=Setup)
    model: Callable[[], nn.Module] | None = None
    n_epoch: int = 2
    lr: float = 0.1
    metrics: bool = True
    loss_func: Callable[[], Any] = nn.CrossEntropyLoss
    #: "sgd": each library's own SGD; "fastai-sgd": fastai's SGD on both Learners.
    opt: str = "sgd"
    ignore_files: tuple[str, ...] = ()


class Tracer(fa_core.Callback):
    """Logs ``(event, epoch, iter, training)`` for every event; reseeds torch at each batch.

    ``after_create`` is logged without state: fastai's Learner has none yet; ``iter`` only at
    batch-level events (fastai has none before the first batch of its first fit).

    Example:
        >>> Tracer().events
        []
    """

    order = -10  # with TrainEvalCallback's order, after it (it was added first): the state is set

    def __init__(self) -> None:
        super().__init__()
        self.events: list[TraceItem] = []

    def _log(self, name: str) -> None:
        learn = self.learn
        if name == "after_create":  # fastai has no loop state yet (no `epoch`, no `iter`)
            self.events.append((name, None, None, None))
            return
        it = getattr(learn, "iter", None) if name in _INNER else None
        state = (getattr(learn, "epoch", None), it, getattr(learn, "training", None))
        self.events.append((name, *state))
        if name == "before_batch":
            epoch, it, training = state
            torch.manual_seed(10_000 * int(epoch or 0) + 10 * int(it or 0) + (1 if training else 2))


def _event_method(name: str) -> Callable[[Tracer], None]:
    def method(self: Tracer) -> None:
        self._log(name)

    method.__name__ = method.__qualname__ = name
    return method


for _name in EVENTS:
    setattr(Tracer, _name, _event_method(_name))


@dataclass
class Outcome:
    """What one Learner did: trace, weights, values, error, files, result, the callbacks left, ...

    ``cbs_after``: sorted class names of the callbacks still on the Learner after the
    action, each library's own default callbacks left out.
    """

    trace: list[TraceItem]
    weights: dict[str, Tensor]
    values: list[list[float]]
    error: BaseException | None
    files: list[str]
    result: Any
    stdout: str
    learn: Any
    path: Path
    caught: list[warnings.WarningMessage]
    cbs_after: list[str]


@dataclass
class Comparison:
    """Both outcomes and the first difference (None when they agree)."""

    case: Case
    fastai: Outcome
    fastlight: Outcome
    diff: str | None


# -- case helpers ----------------------------------------------------------------------------------
def hyper_lr(learn: Any) -> float:
    """The last param group's learning rate, from fastai's ``opt.hypers`` or torch's ``param_groups``."""
    opt = learn.opt
    return float(opt.hypers[-1]["lr"] if hasattr(opt, "hypers") else opt.param_groups[-1]["lr"])


def check_attr(get: Callable[[Outcome], Any], what: str) -> Callable[[Outcome, Outcome], str | None]:
    """A check comparing ``get(outcome)`` on both sides (tensors and numbers to the oracle's tolerance)."""

    def check(fa: Outcome, fl: Outcome) -> str | None:
        try:
            a = get(fa)
        except Exception as exc:
            return f"{what}: fastai could not give it ({exc!r})"
        try:
            b = get(fl)
        except Exception as exc:
            return f"{what}: fastlight could not give it ({exc!r})"
        return first_result_diff(a, b, what)

    return check


class Keep:
    """A callback factory that remembers what it built for each side, for checks after the fit.

    Example:
        >>> keep = Keep(Tracer)
        >>> [cb] = keep(Path("a"))
        >>> keep.made[Path("a")] is cb
        True
    """

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make
        self.made: dict[Path, Any] = {}

    def __call__(self, path: Path) -> list[Any]:
        cb = self.make()
        self.made[path] = cb
        return [cb]

    def of(self, outcome: Outcome) -> Any:
        """The callback built for ``outcome``'s side (found by its ``path``)."""
        return self.made[outcome.path]


def raising(exc: type[Exception], event: str, when: Callable[[Any], bool]) -> Callable[[Path], list[Any]]:
    """A user callback (fastai ``Callback`` subclass) raising ``exc`` at ``event`` when ``when(learn)``."""

    def make(path: Path) -> list[Any]:
        def method(self: Any) -> None:
            if when(self.learn):
                raise exc()

        cls = type(f"Raise{exc.__name__}", (fa_core.Callback,), {event: method})
        return [cls()]

    return make


class NaNAt:
    """Cross-entropy whose ``at``-th call (0-based) returns NaN (for TerminateOnNaNCallback)."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0
        self.reduction = "mean"

    def __call__(self, pred: Tensor, targ: Tensor) -> Tensor:
        loss = nn.functional.cross_entropy(pred, targ)
        self.calls += 1
        return loss * float("nan") if self.calls - 1 == self.at else loss


class ToyRNN(nn.Module):
    """Returns ``(pred, [raw_out], [out])`` as fastai's AWD-LSTM does; ``reset()`` is counted."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin1, self.lin2, self.resets = nn.Linear(4, 8), nn.Linear(8, 3), 0

    def reset(self) -> None:
        self.resets += 1

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        h = torch.relu(self.lin1(x))
        seq = h.view(x.shape[0], 2, 4)
        return self.lin2(h), [seq], [seq * 0.5]


class Resettable(nn.Sequential):
    """An MLP with a ``reset()`` that counts its calls (for ModelResetter)."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1


def rebind(event: str, attr: str, f: Callable[[Any], Any]) -> Callable[[Path], list[Any]]:
    """A user callback that sets ``learn.<attr> = f(learn)`` at ``event`` on training batches."""

    def make(path: Path) -> list[Any]:
        def method(self: Any) -> None:
            if self.training:
                setattr(self.learn, attr, f(self.learn))

        return [type(f"Rebind_{attr}", (fa_core.Callback,), {event: method})()]

    return make


class NormHook(HookCallback):
    """A user HookCallback: the output norm of each layer with parameters, every ``every`` batches."""

    def __init__(self, every: int | None = None) -> None:
        super().__init__(every=every)
        self.norms: list[list[float]] = []

    def hook(self, m: nn.Module, i: Any, o: Tensor) -> float:
        return float(o.norm())

    def after_batch(self) -> None:
        if self.training and getattr(self, "hooks", None) is not None and self.hooks.stored:
            self.norms.append(list(self.hooks.stored))
        super().after_batch()


def _files(path: Path) -> list[str]:
    out = []
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        if p.is_file() and not rel.startswith(_FASTLIGHT_OWN):
            out.append(rel)
    return out


def _values(learn: Any) -> list[list[float]]:
    rec = getattr(learn, "recorder", None)
    rows = getattr(rec, "values", None) or []
    return [[float(v) for v in row] for row in rows]


def _run(case: Case, side: str, build: Callable[[Path, nn.Module, list[Any]], Any], model: nn.Module) -> Outcome:
    tracer = Tracer()
    tmp = Path(tempfile.mkdtemp(prefix=f"oracle-{side}-"))
    out = io.StringIO()
    error: BaseException | None = None
    result: Any = None
    learn: Any = None
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out):
        warnings.simplefilter("always")
        try:
            learn = build(tmp, model, [tracer, *case.cbs(tmp)])
            torch.manual_seed(1234)
            result = case.action(learn, case, case.fit_cbs(tmp))
        except Exception as exc:
            error = exc
    final = learn.model if learn is not None else model
    weights = {k: v.detach().clone() for k, v in final.state_dict().items()}
    values = _values(learn) if learn is not None else []
    left = [type(c).__name__ for c in getattr(learn, "cbs", [])] if learn is not None else []
    left = sorted(n for n in left if n not in _DEFAULT_CBS)
    files = [f for f in _files(tmp) if not f.startswith(case.ignore_files)] if case.ignore_files else _files(tmp)
    return Outcome(tracer.events, weights, values, error, files, result, out.getvalue(), learn, tmp, list(caught), left)


def run_fastai(case: Case, model: nn.Module) -> Outcome:
    """``case`` on fastai's own Learner (CPU, no progress bar).

    Example:
        >>> run_fastai(Case("one epoch", n_epoch=1), Setup().model()).values[0][2] >= 0
        True
    """
    xt, yt, xv, yv = case.setup.tensors()
    bs = case.setup.bs

    def build(path: Path, m: nn.Module, cbs: list[Any]) -> Any:
        dls = DataLoaders(
            FaDataLoader(TensorDataset(xt, yt), bs=bs, shuffle=False),
            FaDataLoader(TensorDataset(xv, yv), bs=bs, shuffle=False),
            device=torch.device("cpu"),
        )
        # fastai's default callbacks but its ProgressCallback (no bar); a case may add its own.
        defaults = [cb for cb in fa_core.defaults.callbacks if cb is not ProgressCallback]
        return fa_learner.Learner(
            dls,
            m,
            loss_func=case.loss_func(),
            opt_func=fa_optim.SGD,
            lr=case.lr,
            cbs=[*defaults, *cbs],
            metrics=[accuracy] if case.metrics else None,
            path=path,
            default_cbs=False,
        )

    return _run(case, "fastai", build, model)


def run_fastlight(case: Case, model: nn.Module) -> Outcome:
    """``case`` on fastlight's ``bridge.Learner`` (CPU, no bar, no logger, no checkpoint).

    Example:
        >>> run_fastlight(Case("one epoch", n_epoch=1), Setup().model()).error is None
        True
    """
    xt, yt, xv, yv = case.setup.tensors()
    bs = case.setup.bs
    opt_func: Any = fa_optim.SGD if case.opt == "fastai-sgd" else bridge.SGD

    def build(path: Path, m: nn.Module, cbs: list[Any]) -> Any:
        data = bridge.DataBunch.from_datasets(TensorDataset(xt, yt), TensorDataset(xv, yv), bs=bs, shuffle=False)
        return bridge.Learner(
            data,
            m,
            loss_func=case.loss_func(),
            opt_func=opt_func,
            lr=case.lr,
            cbs=cbs,
            metrics=[accuracy] if case.metrics else None,
            path=path,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_checkpointing=False,
        )

    return _run(case, "fastlight", build, model)


def _first_trace_diff(a: Sequence[TraceItem], b: Sequence[TraceItem]) -> str | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"trace[{i}]: fastai {x} vs fastlight {y}"
    if len(a) != len(b):
        i = min(len(a), len(b))
        extra = ("fastai", a[i]) if len(a) > i else ("fastlight", b[i])
        return f"trace length: fastai {len(a)} vs fastlight {len(b)}; first extra ({extra[0]}) trace[{i}] {extra[1]}"
    return None


def _first_weight_diff(a: dict[str, Tensor], b: dict[str, Tensor]) -> str | None:
    if list(a) != list(b):
        return f"weights: state_dict keys differ: fastai {list(a)} vs fastlight {list(b)}"
    for k in a:
        x, y = a[k], b[k]
        if x.shape != y.shape or x.dtype != y.dtype:
            return f"weights[{k}]: fastai {x.dtype}{tuple(x.shape)} vs fastlight {y.dtype}{tuple(y.shape)}"
        if x.is_floating_point():
            nan_x, nan_y = torch.isnan(x), torch.isnan(y)
            if not torch.equal(nan_x, nan_y):
                return f"weights[{k}]: NaN in fastai {int(nan_x.sum())} vs fastlight {int(nan_y.sum())} entries"
            ok = ~nan_x
            d = float((x[ok].double() - y[ok].double()).abs().max()) if bool(ok.any()) else 0.0
            if not d <= ATOL:
                return f"weights[{k}]: max abs diff {d:.3g} > {ATOL:g}"
        elif not torch.equal(x, y):
            return f"weights[{k}]: fastai {x.tolist()} vs fastlight {y.tolist()}"
    return None


def _close(x: float, y: float) -> bool:
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return math.isclose(x, y, rel_tol=RTOL, abs_tol=ATOL)


def _first_values_diff(a: list[list[float]], b: list[list[float]]) -> str | None:
    if len(a) != len(b):
        return f"recorder.values: fastai {len(a)} rows {a} vs fastlight {len(b)} rows {b}"
    for i, (ra, rb) in enumerate(zip(a, b)):
        if len(ra) != len(rb) or not all(_close(x, y) for x, y in zip(ra, rb)):
            return f"recorder.values[{i}]: fastai {ra} vs fastlight {rb}"
    return None


def _plain(o: Any) -> Any:
    """Tensors, numbers, None and (nested) sequences as plain tuples; anything else by type name."""
    if o is None or isinstance(o, (bool, str)):
        return o
    if isinstance(o, Tensor):
        return o.detach().cpu()
    if isinstance(o, (int, float)):
        return float(o)
    if isinstance(o, (list, tuple)) or type(o).__name__ == "L":
        return tuple(_plain(v) for v in o)
    return f"<{type(o).__name__}>"


def first_result_diff(a: Any, b: Any, where: str = "result") -> str | None:
    """The first place where two results differ (tensors and numbers to ATOL / RTOL), or None.

    Example:
        >>> first_result_diff([torch.ones(2), 1.0], (torch.ones(2), 1.0)) is None
        True
    """
    a, b = _plain(a), _plain(b)
    if isinstance(a, tuple) and isinstance(b, tuple):
        if len(a) != len(b):
            return f"{where}: fastai has {len(a)} items, fastlight {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_result_diff(x, y, f"{where}[{i}]")
            if d is not None:
                return d
        return None
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.shape != b.shape:
            return f"{where}: shapes fastai {tuple(a.shape)} vs fastlight {tuple(b.shape)}"
        if a.is_floating_point() or b.is_floating_point():
            same = torch.allclose(a.double(), b.double(), rtol=RTOL, atol=ATOL, equal_nan=True)
        else:
            same = torch.equal(a, b)
        return (
            None
            if same
            else f"{where}: fastai {a.flatten()[:6].tolist()}... vs fastlight {b.flatten()[:6].tolist()}..."
        )
    if isinstance(a, float) and isinstance(b, float):
        return None if _close(a, b) else f"{where}: fastai {a} vs fastlight {b}"
    return None if a == b else f"{where}: fastai {a!r} vs fastlight {b!r}"


def compare(case: Case, fa: Outcome, fl: Outcome) -> str | None:
    """The first difference between the two outcomes of ``case``, or None.

    In this order: exception type, trace, weights, ``recorder.values``, files, the action's
    result, the callbacks left on the Learner, the case's own ``check``.

    Example:
        >>> m = Setup().model()
        >>> c = Case("one epoch", n_epoch=1)
        >>> compare(c, run_fastai(c, copy.deepcopy(m)), run_fastlight(c, copy.deepcopy(m))) is None
        True
    """
    ea, eb = fa.error, fl.error
    if (ea is None) != (eb is None) or (ea is not None and type(ea).__name__ != type(eb).__name__):
        return f"exception: fastai {ea!r} vs fastlight {eb!r}"
    for diff in (
        _first_trace_diff(fa.trace, fl.trace),
        _first_weight_diff(fa.weights, fl.weights),
        _first_values_diff(fa.values, fl.values),
        None if fa.files == fl.files else f"files: fastai {fa.files} vs fastlight {fl.files}",
        first_result_diff(fa.result, fl.result),
        None if fa.cbs_after == fl.cbs_after else f"callbacks left: fastai {fa.cbs_after} vs fastlight {fl.cbs_after}",
        case.check(fa, fl) if case.check is not None else None,
    ):
        if diff is not None:
            return diff
    return None


def run_case(case: Case) -> Comparison:
    """Run ``case`` on both Learners from one model (deep copies) and compare."""
    model = case.model() if case.model is not None else case.setup.model()
    fa = run_fastai(case, copy.deepcopy(model))
    fl = run_fastlight(case, copy.deepcopy(model))
    return Comparison(case, fa, fl, compare(case, fa, fl))
