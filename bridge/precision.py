"""fastai's precision switches (``to_fp16`` / ``to_bf16`` / ``to_fp32``) as Trainer settings.

fastai changes precision with a ``MixedPrecision`` callback that patches the loop; on
Lightning, precision belongs to the ``Trainer`` (its precision plugin runs autocast and the
GradScaler, and the bridge's ``before_step`` sees unscaled grads). These helpers set the
Learner's ``trainer_options`` and turn a ported fastai ``MixedPrecision`` callback into
that setting.
"""

from __future__ import annotations

import typing
import warnings
from typing import TYPE_CHECKING, Any, TypeVar

from lightning.pytorch.plugins.precision import MixedPrecision, Precision

if TYPE_CHECKING:
    from .protocol import LearnerState

__all__ = ["PRECISION_CALLBACKS", "set_precision", "to_bf16", "to_fp16", "to_fp32", "translate_precision_callback"]

L = TypeVar("L", bound="LearnerState")

#: Names of fastai callback classes that are turned into a Trainer precision.
PRECISION_CALLBACKS = ("MixedPrecision", "NonNativeMixedPrecision")


def _accepted() -> tuple[str, ...]:
    try:
        import lightning.fabric.connector as connector

        return tuple(str(a) for a in typing.get_args(vars(connector)["_PRECISION_INPUT_STR"]))
    except Exception:  # lightning moved it: accept the common values
        return ("16-mixed", "bf16-mixed", "32-true", "64-true", "16-true", "bf16-true")


def set_precision(learn: L, precision: str) -> L:
    """Train ``learn`` with Lightning ``precision`` (``"16-mixed"``, ``"bf16-mixed"``, ``"32-true"``...).

    Sets ``learn.trainer_options["precision"]``. A precision plugin in
    ``trainer_options["plugins"]`` (Lightning refuses both) is kept if it already gives that
    precision (e.g. ``MixedPrecision("16-mixed", "cpu", scaler=GradScaler("cpu"))``, then no
    ``precision`` key is set) and removed otherwise. Returns ``learn``.

    Example:
        >>> set_precision(learn, "16-mixed") is learn, learn.trainer_options["precision"]
        (True, '16-mixed')
    """
    accepted = _accepted()
    if not isinstance(precision, str) or precision not in accepted:
        raise ValueError(f"set_precision: `precision` must be one of {', '.join(accepted)}; got {precision!r}")
    opts = learn.trainer_options
    plugins = opts.get("plugins")
    as_list = plugins if isinstance(plugins, (list, tuple)) else [] if plugins is None else [plugins]
    keep_plugin = False
    kept: list[Any] = []
    for p in as_list:
        if isinstance(p, Precision):
            if isinstance(p, MixedPrecision) and p.precision == precision:
                keep_plugin = True
                kept.append(p)
            continue
        kept.append(p)
    if kept:
        opts["plugins"] = kept
    else:
        opts.pop("plugins", None)
    if keep_plugin:
        opts.pop("precision", None)
    else:
        opts["precision"] = precision
    return learn


def _callback_precision(cb: Any) -> str:
    mode = getattr(cb, "amp_mode", None)
    mode = getattr(mode, "value", mode)  # fastai's AMPMode enum
    if isinstance(mode, str) and "bf16" in mode.lower():
        return "bf16-mixed"
    dtype = getattr(cb, "dtype", None)
    if dtype is not None and "bfloat16" in str(dtype):
        return "bf16-mixed"
    return "16-mixed"


def translate_precision_callback(learn: LearnerState, cb: Any) -> bool:
    """If ``cb`` is a ported fastai ``MixedPrecision`` callback, set the Trainer precision instead.

    Returns True when ``cb`` was translated (the caller must then not add it): fastai's
    ``MixedPrecision`` (``amp_mode`` fp16 or bf16) and ``NonNativeMixedPrecision`` become
    ``learn.to_fp16()`` / ``learn.to_bf16()`` with a warning. GradScaler settings of the
    callback are not carried over (Lightning's defaults are used).

    Example:
        >>> class MixedPrecision:  # a fastai port
        ...     def before_fit(self): ...
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     translated = translate_precision_callback(learn, MixedPrecision())
        >>> translated, learn.trainer_options["precision"], "learn.to_fp16()" in str(caught[0].message)
        (True, '16-mixed', True)
    """
    if isinstance(cb, type) or isinstance(cb, Precision) or type(cb).__name__ not in PRECISION_CALLBACKS:
        return False
    precision = _callback_precision(cb)
    set_precision(learn, precision)
    warnings.warn(
        f"{type(cb).__name__} is fastai's loop-level mixed precision; fastlight runs it as the Trainer's "
        f"precision={precision!r} instead (learn.to_{'bf16' if precision.startswith('bf16') else 'fp16'}()); "
        "the callback itself is not added",
        stacklevel=3,
    )
    return True


def to_fp16(learn: L) -> L:
    """Train with fp16 mixed precision (``precision="16-mixed"``, with a GradScaler).

    Example:
        >>> learn.to_fp16().trainer_options["precision"]
        '16-mixed'
    """
    return set_precision(learn, "16-mixed")


def to_bf16(learn: L) -> L:
    """Train with bf16 mixed precision (``precision="bf16-mixed"``).

    Example:
        >>> learn.to_bf16().trainer_options["precision"]
        'bf16-mixed'
    """
    return set_precision(learn, "bf16-mixed")


def to_fp32(learn: L) -> L:
    """Train in full precision again.

    Example:
        >>> learn.to_fp16().to_fp32().trainer_options["precision"]
        '32-true'
    """
    return set_precision(learn, "32-true")
