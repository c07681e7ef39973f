"""The Trainer policy of a Learner: which ``lightning.Trainer`` each fit, validate and get_preds gets.

Example:
    >>> interactive_output() in (True, False)
    True
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.utilities import registry
from lightning.pytorch.callbacks import ModelCheckpoint, StochasticWeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO

from .checkpoint_io import AtomicCheckpointIO
from .checks import check_path
from .profiler import NoProfiler
from .sharding import check_strategy, fresh_strategy

__all__ = [
    "LastCheckpoint",
    "cached_entry_points",
    "check_ckpt_path",
    "check_trainer_options",
    "checkpoint_dir",
    "interactive_output",
    "make_trainer",
    "quiet",
    "refuse_unsupported",
    "with_atomic_io",
]

_TRAINER_KWARGS = frozenset(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
# Options the Learner owns, with what to use instead.
_RESERVED = {
    "max_epochs": "pass the number of epochs to fit(n_epoch)",
    "min_epochs": "fastai always runs the n_epoch given to fit(); use EarlyStoppingCallback to stop early",
    "gradient_clip_val": "use callbacks.GradientClip(max_norm=...) (fastai's way; it sees unscaled grads)",
    "gradient_clip_algorithm": "use callbacks.GradientClip(norm_type=...)",
    "accumulate_grad_batches": "use callbacks.GradientAccumulation(n_acc=...)",
}
# Lightning warnings that are noise for a Learner: the Recorder logs at its own pace, CPU
# loaders with num_workers=0 are the user's choice, and the pytree one is Lightning's own.
_QUIET_WARNINGS = (
    ".*smaller than the logging interval.*",
    ".*does not have many workers.*",
    ".*LeafSpec.*",
    # Lightning's advice for manual optimization and every_n_train_steps; a Learner saves
    # after the whole batch, step included, which is what a resume needs.
    ".*no pre-optimization state was saved.*",
    # resume=True reads the default checkpoint whatever ModelCheckpoint wrote it.
    ".*callbacks used to create the checkpoint need to be provided.*",
)
_QUIET_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def check_trainer_options(where: str, options: dict[str, Any]) -> None:
    """Refuse Trainer options the Learner manages, and keywords that are no Trainer option.

    Example:
        >>> check_trainer_options("fit", {"max_epochs": 3})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: fit: the Trainer option `max_epochs` is managed by the Learner; pass the number of ...
    """
    for key in options:
        if key in _RESERVED:
            raise ValueError(f"{where}: the Trainer option `{key}` is managed by the Learner; {_RESERVED[key]}")
        if key not in _TRAINER_KWARGS:
            raise TypeError(
                f"{where}: unknown keyword `{key}`; Learner keywords are its own arguments plus any "
                f"lightning.Trainer option ({', '.join(sorted(_TRAINER_KWARGS - set(_RESERVED)))})"
            )


#: ``ckpt_path`` values that Lightning resolves itself (plus ``registry:<name>...`` and URLs).
_CKPT_SPECIAL = frozenset({"last", "best", "hpc", "registry"})


def check_ckpt_path(ckpt_path: object) -> None:
    """``fit(ckpt_path=...)``: an existing file, or a name Lightning resolves itself.

    Example:
        >>> check_ckpt_path("last"); check_ckpt_path(None)
    """
    if ckpt_path is None:
        return
    text = check_path(ckpt_path, "ckpt_path", "fit")
    if isinstance(ckpt_path, str) and (text in _CKPT_SPECIAL or text.lower().startswith("registry:") or "://" in text):
        return
    if not os.path.isfile(text):
        raise FileNotFoundError(
            f"fit: `ckpt_path` {text!r} is not a checkpoint file; give a file written by Lightning, "
            "one of 'last', 'best', 'hpc', 'registry', or use resume=True"
        )


def checkpoint_dir(path: Path) -> Path:
    """Where each fit of a Learner at ``path`` keeps its resumable checkpoint, ``last.ckpt``.

    Example:
        >>> checkpoint_dir(Path("run")).as_posix()
        'run/checkpoints'
    """
    return path / "checkpoints"


def make_trainer(
    path: Path,
    options: dict[str, Any],
    overrides: dict[str, Any],
    extra_callbacks: Sequence[pl.Callback] = (),
    for_fit: bool = False,
) -> pl.Trainer:
    """A new ``lightning.Trainer`` for one fit / validate / get_preds of a Learner.

    The Learner's defaults (no sanity check, no model summary, a progress bar only where it can
    redraw in place, a TensorBoard logger under ``path``, atomic checkpoint I/O and, for a fit,
    the resumable ``path/checkpoints/last.ckpt``), then the Learner's ``options``, then ``overrides``.

    Example:
        >>> import tempfile
        >>> t = make_trainer(Path(tempfile.mkdtemp()), {"logger": False}, {"max_epochs": 2}, for_fit=True)
        >>> t.max_epochs, [type(c).__name__ for c in t.checkpoint_callbacks]
        (2, ['LastCheckpoint'])
    """
    opts: dict[str, Any] = {
        "accelerator": "auto",
        "devices": 1,
        "num_sanity_val_steps": 0,
        "enable_checkpointing": for_fit,
        "enable_model_summary": False,
        "enable_progress_bar": interactive_output(),
        "default_root_dir": str(path),
    }
    opts.update(options)
    opts.update(overrides)
    if opts.get("profiler") is None and not opts.get("barebones"):  # barebones refuses any profiler
        opts["profiler"] = NoProfiler()
    # Refused here, before any process is launched (and before Lightning's own CPU refusal of "fsdp").
    check_strategy(opts.get("strategy", "auto"))
    # Lightning refuses a strategy instance an earlier Trainer used: each Trainer gets its own copy.
    opts["strategy"] = fresh_strategy(opts.get("strategy", "auto"))
    if "logger" not in opts or opts["logger"] is True:
        opts["logger"] = TensorBoardLogger(save_dir=str(path), name="lightning_logs", default_hp_metric=False)
    callbacks = opts.pop("callbacks", None) or []
    if isinstance(callbacks, pl.Callback):
        callbacks = [callbacks]
    opts["callbacks"] = list(callbacks) + list(extra_callbacks)
    refuse_unsupported(opts["callbacks"])
    opts["plugins"] = with_atomic_io(opts.get("plugins"), opts.get("strategy"))
    has_ckpt = any(isinstance(c, ModelCheckpoint) for c in opts["callbacks"])
    if has_ckpt and "enable_checkpointing" not in {**options, **overrides}:
        opts["enable_checkpointing"] = True
    elif for_fit and opts["enable_checkpointing"] and not has_ckpt:
        # The resumable checkpoint of every fit (weights, optimizer, loops, callback
        # state, RNG), rewritten at each epoch end: what `fit(..., resume=True)` reads.
        opts["callbacks"].append(
            LastCheckpoint(
                dirpath=str(checkpoint_dir(path)),
                filename="last",
                save_top_k=1,
                every_n_epochs=1,
                enable_version_counter=False,
            )
        )
    with quiet(), cached_entry_points():
        return pl.Trainer(**opts)


class LastCheckpoint(ModelCheckpoint):
    """The Learner's default ``ModelCheckpoint`` (``checkpoints/last.ckpt``), with its ``state_key`` built once.

    Lightning reads a callback's ``state_key`` at every hook it calls on it (its profiler's label),
    five times a batch, and ``ModelCheckpoint`` builds it each time from a ``repr`` of its settings
    (profile of issue 21). The key is the one ``ModelCheckpoint`` would give, so checkpoints
    written before load alike.

    Example:
        >>> ckpt = LastCheckpoint(dirpath="checkpoints", filename="last")
        >>> ckpt.state_key == ModelCheckpoint(dirpath="checkpoints", filename="last").state_key
        True
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        own = type(self).__qualname__
        key: str = ModelCheckpoint.state_key.fget(self)  # type: ignore[attr-defined]
        self._state_key = "ModelCheckpoint" + key[len(own) :]

    @property
    def state_key(self) -> str:
        return self._state_key


_ENTRY_POINTS: dict[tuple[Any, ...], Any] = {}


#: Names of installed distributions' metadata folders (what ``importlib.metadata`` reads).
_DIST_SUFFIXES = (".dist-info", ".egg-info")
_LISTINGS: dict[str, tuple[int, frozenset[str]]] = {}


def _distributions(entry: str) -> frozenset[str]:
    """The metadata folders in one ``sys.path`` entry, listed again only when the entry's mtime changed."""
    folder = entry or "."
    try:
        mtime = os.stat(folder).st_mtime_ns
    except OSError:
        return frozenset()
    cached = _LISTINGS.get(entry)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        names = frozenset(name for name in os.listdir(folder) if name.endswith(_DIST_SUFFIXES))
    except OSError:  # a zip or egg file: its mtime stands for its contents
        names = frozenset({f"<file {mtime}>"})
    _LISTINGS[entry] = (mtime, names)
    return names


def _path_key() -> tuple[tuple[str, frozenset[str]], ...]:
    """``sys.path`` with the distributions each entry holds: installing or removing a package changes it."""
    return tuple((entry, _distributions(entry)) for entry in sys.path)


@contextlib.contextmanager
def cached_entry_points() -> Iterator[None]:
    """While a Trainer is built, Lightning's scan for callback-factory entry points is read from a cache.

    Each ``lightning.Trainer`` scans every installed package's metadata for
    ``lightning.pytorch.callbacks_factory`` entry points (3-8 ms, most of building one: profile
    of issue 21); a Learner builds one per fit. The scan's result (the entry points, not the
    callbacks: every factory still runs for every Trainer) is kept per group and per ``sys.path``
    with the distributions (``*.dist-info`` / ``*.egg-info`` folders) each entry holds, so a
    package installed, upgraded or removed mid-session is seen as before; files written into a
    ``sys.path`` folder (a fit's output under the working directory) do not void the cache.

    Example:
        >>> with cached_entry_points():
        ...     first = registry.entry_points(group="lightning.pytorch.callbacks_factory")
        ...     again = registry.entry_points(group="lightning.pytorch.callbacks_factory")
        >>> first is again and registry.entry_points is importlib.metadata.entry_points
        True
    """
    original = getattr(registry, "entry_points", None)
    if original is not importlib.metadata.entry_points:  # another Lightning, or someone else's patch: leave it
        yield
        return

    def cached(**params: Any) -> Any:
        key = (tuple(sorted(params.items())), _path_key())
        if key not in _ENTRY_POINTS:
            _ENTRY_POINTS.clear()  # one sys.path state at a time
            _ENTRY_POINTS[key] = original(**params)
        return _ENTRY_POINTS[key]

    setattr(registry, "entry_points", cached)  # noqa: B010  # not a name Lightning exports
    try:
        yield
    finally:
        setattr(registry, "entry_points", original)  # noqa: B010


def interactive_output() -> bool:
    """True where a progress bar can redraw in place: a terminal, or a Jupyter kernel.

    Example:
        >>> interactive_output() in (True, False)
        True

    In a pipe or a log file the bar's carriage returns and cursor moves would garble the
    epoch table, so the default there is no bar (``enable_progress_bar=True`` still forces it).
    """
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def with_atomic_io(plugins: Any, strategy: Any) -> Any:
    """The Trainer's plugins plus :class:`AtomicCheckpointIO`, unless the user chose a checkpoint I/O.

    Example:
        >>> [type(p).__name__ for p in with_atomic_io(None, None)]
        ['AtomicCheckpointIO']
    """
    listed = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if any(isinstance(p, CheckpointIO) for p in listed) or getattr(strategy, "_checkpoint_io", None) is not None:
        return plugins
    return [*listed, AtomicCheckpointIO()]


def refuse_unsupported(callbacks: list[Any]) -> None:
    """Refuse Lightning callbacks that cannot work on a Learner's manual optimization.

    Example:
        >>> refuse_unsupported([StochasticWeightAveraging(swa_lrs=0.01)])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: Learner: Lightning's StochasticWeightAveraging is not supported: ...
    """
    for cb in callbacks:
        if isinstance(cb, ModelCheckpoint) and cb._train_time_interval is not None:
            raise TypeError(
                "Learner: ModelCheckpoint(train_time_interval=...) never saves in a Learner fit: with manual "
                "optimization Lightning only checks every_n_train_steps; use every_n_train_steps=... instead"
            )
        if isinstance(cb, StochasticWeightAveraging):
            raise TypeError(
                "Learner: Lightning's StochasticWeightAveraging is not supported: the Learner's module uses "
                "manual optimization, where Lightning never steps SWA's learning-rate schedule (`swa_lrs` would "
                "be ignored) and its batch-norm update epoch would train; average weights with "
                "torch.optim.swa_utils.AveragedModel in a callback's after_epoch instead"
            )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep Lightning's start-up chatter (GPU/TPU availability, tips) out of the output.

    Example:
        >>> with quiet():
        ...     pass
    """
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in _QUIET_WARNINGS:
                warnings.filterwarnings("ignore", pattern)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
