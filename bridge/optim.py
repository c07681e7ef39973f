"""fastai's optimizers and hyper-parameter names, on top of ``torch.optim``.

fastai names its hyper-parameters ``lr``, ``mom``, ``sqr_mom``, ``wd`` and ``eps``;
torch calls them ``lr``, ``momentum`` / ``betas[0]``, ``betas[1]``, ``weight_decay`` and
``eps``. :func:`set_hyper` and :func:`get_hypers` translate, so callbacks written with
fastai's names drive any torch optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "FORMS",
    "NORM_TYPES",
    "NO_WD",
    "SGD",
    "Adam",
    "FastaiSGD",
    "OptFunc",
    "call_splitter",
    "check_opt_func",
    "check_ready_opt",
    "get_hypers",
    "param_groups",
    "set_hyper",
    "trainable_params",
]

#: ``opt_func(params, lr=...) -> torch.optim.Optimizer``; params may be param-group dicts.
OptFunc = Callable[..., torch.optim.Optimizer]

#: Param-group key marking groups (bias and norm parameters) exempt from weight decay.
NO_WD = "fastlight_no_wd"


def _check_hyper(where: str, name: str, value: object, low: float = 0.0, below: float | None = None) -> float:
    """A hyper-parameter given with fastai's name: a finite number in ``[low, below)`` (``below`` None: no bound)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (below is not None and value >= below):  # type: ignore[operator]
        accepted = f"in [{low:g}, {below:g})" if below is not None else f">= {low:g}"
        raise ValueError(f"{where}: `{name}` must be a finite number {accepted}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def Adam(
    params: Iterable[Any],
    lr: float = 1e-3,
    mom: float = 0.9,
    sqr_mom: float = 0.99,
    eps: float = 1e-5,
    wd: float = 0.01,
    decouple_wd: bool = True,
) -> torch.optim.Optimizer:
    """fastai's default optimizer: Adam with decoupled weight decay (torch ``AdamW``).

    Same defaults as fastai: ``betas=(0.9, 0.99)``, ``eps=1e-5``, ``wd=0.01``. With
    ``decouple_wd=False`` the weight decay is an L2 penalty (torch ``Adam``).

    Example:
        >>> from torch import nn
        >>> opt = Adam(nn.Linear(2, 1).parameters(), lr=1e-2)
        >>> opt.param_groups[0]["betas"], opt.param_groups[0]["eps"]
        ((0.9, 0.99), 1e-05)
    """
    mom, sqr_mom = _check_hyper("Adam", "mom", mom, below=1.0), _check_hyper("Adam", "sqr_mom", sqr_mom, below=1.0)
    _check_hyper("Adam", "lr", lr)
    _check_hyper("Adam", "eps", eps)
    _check_hyper("Adam", "wd", wd)
    if not isinstance(decouple_wd, bool):
        raise TypeError(f"Adam: `decouple_wd` must be a bool, got {decouple_wd!r}")
    cls = torch.optim.AdamW if decouple_wd else torch.optim.Adam
    return cls(params, lr=lr, betas=(mom, sqr_mom), eps=eps, weight_decay=wd)


class FastaiSGD(torch.optim.SGD):
    """torch SGD stepping as fastai's ``SGD``: true (decoupled) weight decay, and no momentum
    when built with ``mom=0`` (fastai's plain ``sgd_step``: a ``mom`` schedule changes nothing).

    ``weight_decay`` in the param groups is fastai's ``wd``: with ``decouple_wd`` each parameter
    is first scaled by ``1 - lr * wd`` (fastai's ``weight_decay``), then torch's SGD steps with no
    L2 term; otherwise it is torch's L2 penalty (fastai's ``l2_reg``).

    Example:
        >>> from torch import nn
        >>> w = nn.Parameter(torch.ones(1)); w.grad = torch.zeros(1)
        >>> FastaiSGD([w], lr=0.1, mom=0.0, wd=0.5).step(); round(float(w), 6)  # 1 * (1 - 0.1 * 0.5)
        0.95
    """

    def __init__(
        self, params: Iterable[Any], lr: float, mom: float = 0.0, wd: float = 0.0, decouple_wd: bool = True
    ) -> None:
        super().__init__(params, lr=lr, momentum=mom, weight_decay=wd)
        self.decouple_wd, self.plain = decouple_wd, mom == 0

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        saved = [(g["weight_decay"], g["momentum"]) for g in self.param_groups]
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
            closure = None
        else:
            loss = None
        for group in self.param_groups:
            if self.decouple_wd:
                lr, wd = group["lr"], group["weight_decay"]
                if wd != 0:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.mul_(1 - lr * wd)
                group["weight_decay"] = 0.0
            if self.plain:
                group["momentum"] = 0.0
        try:
            super().step()
        finally:
            for group, (wd, mom) in zip(self.param_groups, saved, strict=True):
                group["weight_decay"], group["momentum"] = wd, mom
        return loss


def SGD(
    params: Iterable[Any], lr: float = 1e-3, mom: float = 0.0, wd: float = 0.0, decouple_wd: bool = True
) -> torch.optim.Optimizer:
    """fastai's ``SGD`` (``mom``, ``wd``, ``decouple_wd``), stepping as fastai's: :class:`FastaiSGD`.

    Example:
        >>> from torch import nn
        >>> SGD(nn.Linear(2, 1).parameters(), lr=0.1, mom=0.9).param_groups[0]["momentum"]
        0.9
    """
    for name, value in (("lr", lr), ("mom", mom), ("wd", wd)):
        _check_hyper("SGD", name, value)
    if not isinstance(decouple_wd, bool):
        raise TypeError(f"SGD: `decouple_wd` must be a bool, got {decouple_wd!r}")
    return FastaiSGD(params, lr=lr, mom=mom, wd=wd, decouple_wd=decouple_wd)


#: fastai's ``norm_types`` (batch, instance and layer norms; not GroupNorm), SyncBatchNorm included.
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.LayerNorm)


def _is_no_wd(module: nn.Module, name: str) -> bool:
    return isinstance(module, NORM_TYPES) or name == "bias"


def param_groups(model: nn.Module, splits: Sequence[Sequence[nn.Parameter]], wd_bn_bias: bool) -> list[dict[str, Any]]:
    """Torch param groups for ``splits``; without ``wd_bn_bias``, bias and norm params get no wd.

    Each split becomes one group, or two (the decayed params, then the exempt ones) when
    it holds bias or normalisation parameters and ``wd_bn_bias`` is False, as fastai does.

    Example:
        >>> from torch import nn
        >>> m = nn.Linear(2, 1)
        >>> [len(g["params"]) for g in param_groups(m, [list(m.parameters())], wd_bn_bias=False)]
        [1, 1]
    """
    exempt: set[int] = set()
    if not wd_bn_bias:
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if _is_no_wd(module, name):
                    exempt.add(id(p))
    groups: list[dict[str, Any]] = []
    for split in splits:
        decay = [p for p in split if id(p) not in exempt]
        no_decay = [p for p in split if id(p) in exempt]
        if decay or not no_decay:
            groups.append({"params": decay})
        if no_decay:
            groups.append({"params": no_decay, NO_WD: True})
    return groups


def _torch_key(group: dict[str, Any], name: str) -> tuple[str, int | None]:
    if name in ("lr", "eps"):
        return name, None
    if name == "wd":
        return "weight_decay", None
    if name == "mom":
        if "betas" in group:
            return "betas", 0
        if "momentum" in group:
            return "momentum", None
        if "alpha" in group:  # RMSprop has momentum too, kept under "momentum"
            return "momentum", None
    if name == "sqr_mom":
        if "betas" in group:
            return "betas", 1
        if "alpha" in group:
            return "alpha", None
    if name in group:
        return name, None
    raise KeyError(
        f"set_hyper: the optimizer has no hyper-parameter for `{name}`; "
        f"its param groups have {sorted(k for k in group if k != 'params')}"
    )


def set_hyper(opt: torch.optim.Optimizer, name: str, value: Any) -> None:
    """Set fastai hyper-parameter ``name`` on every param group of ``opt``.

    ``value`` is one number for all groups or one per group. ``wd`` leaves the groups
    fastlight exempts from weight decay (bias/norm) at 0.

    Example:
        >>> from torch import nn
        >>> opt = Adam(nn.Linear(2, 1).parameters())
        >>> set_hyper(opt, "mom", 0.8); opt.param_groups[0]["betas"]
        (0.8, 0.99)
    """
    groups = opt.param_groups
    values = list(value) if isinstance(value, (list, tuple)) else [value] * len(groups)
    if len(values) != len(groups):
        raise ValueError(f"set_hyper: got {len(values)} values of `{name}` for {len(groups)} param groups")
    for group, v in zip(groups, values, strict=True):
        if name == "wd" and group.get(NO_WD):
            v = 0.0
        key, idx = _torch_key(group, name)
        if idx is None:
            group[key] = v
        else:
            pair = list(group[key])
            pair[idx] = v
            group[key] = tuple(pair)


def get_hypers(opt: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """fastai-named hyper-parameters of each param group (``opt.hypers`` in fastai).

    Example:
        >>> from torch import nn
        >>> get_hypers(Adam(nn.Linear(2, 1).parameters()))[0]["sqr_mom"]
        0.99
    """
    out: list[dict[str, Any]] = []
    for group in opt.param_groups:
        h: dict[str, Any] = {}
        for name in ("lr", "mom", "sqr_mom", "wd", "eps"):
            try:
                key, idx = _torch_key(group, name)
            except KeyError:
                continue
            if key not in group:
                continue
            h[name] = group[key] if idx is None else group[key][idx]
        out.append(h)
    return out


#: The two Learner forms, for error messages.
FORMS = (
    "the forms are Learner(data, model, loss_func=..., opt_func=...) (fastai v2) and "
    "Learner(model, opt, loss_func, data) with a ready torch optimizer (the article, course-v3)"
)


def check_ready_opt(opt: object, model: nn.Module) -> None:
    """A ready optimizer given to the Learner must be a torch optimizer over the model's parameters.

    Example:
        >>> m = nn.Linear(2, 1)
        >>> check_ready_opt(torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1), m)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Learner: `opt` (SGD) holds 2 parameter(s) that are not the model's (Linear); ...
    """
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"Learner: `opt` must be a torch.optim.Optimizer or None, got {type(opt).__name__}; {FORMS}")
    own = {id(p) for p in model.parameters()}
    foreign = sum(1 for g in opt.param_groups for p in g["params"] if id(p) not in own)
    if foreign:
        raise ValueError(
            f"Learner: `opt` ({type(opt).__name__}) holds {foreign} parameter(s) that are not the model's "
            f"({type(model).__name__}); build it over model.parameters()"
        )


def call_splitter(splitter: Callable[[nn.Module], Any], model: nn.Module) -> list[list[nn.Parameter]]:
    """``splitter(model)`` as lists of parameters; a wrong signature or result names ``splitter``.

    Example:
        >>> [len(g) for g in call_splitter(lambda m: [[m.weight], [m.bias]], nn.Linear(2, 1))]
        [1, 1]
    """
    # Only the call and the reading of its result are wrapped: a wrong signature or a result
    # of the wrong shape names `splitter` instead of failing inside param_groups or torch.
    try:
        splits = [list(split) for split in splitter(model)]
    except (TypeError, ValueError) as exc:
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(f"Learner: `splitter`(model) must return lists of parameters: {exc}") from exc
    for split in splits:
        for p in split:
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"Learner: `splitter`(model) must return lists of parameters, got a {type(p).__name__} in a list"
                )
    return splits


def trainable_params(model: nn.Module) -> list[list[nn.Parameter]]:
    """fastai's default splitter: one group with every parameter that requires grad.

    Example:
        >>> from torch import nn
        >>> len(trainable_params(nn.Linear(2, 1))[0])
        2
    """
    return [[p for p in model.parameters() if p.requires_grad]]


#: fastai's optimizers (``fastai.optimizer``) and what to use instead on Lightning.
_FASTAI_OPTS = {
    "SGD": "bridge.SGD",
    "Adam": "bridge.Adam",
    "RMSProp": "torch.optim.RMSprop",
    "RAdam": "torch.optim.RAdam(decoupled_weight_decay=True)",
    "QHAdam": "no torch equivalent; torch.optim.Adam is the nearest",
    "Larc": "no torch equivalent",
    "Lamb": "no torch equivalent",
    "Lookahead": "no torch equivalent",
    "ranger": "no torch equivalent; torch.optim.RAdam is the nearest",
}


def check_opt_func(opt_func: Any) -> None:
    """Refuse fastai's own optimizers (they return fastai's ``Optimizer``, which Lightning cannot step).

    Example:
        >>> def SGD(params, lr): ...
        >>> SGD.__module__ = "fastai.optimizer"
        >>> check_opt_func(SGD)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: Learner: `opt_func` fastai.optimizer.SGD builds fastai's Optimizer, ...; use bridge.SGD ...
    """
    module = getattr(opt_func, "__module__", "") or ""
    if not module.startswith("fastai"):
        return
    name = getattr(opt_func, "__name__", type(opt_func).__name__)
    instead = _FASTAI_OPTS.get(name, "a torch.optim optimizer")
    raise TypeError(
        f"Learner: `opt_func` {module}.{name} builds fastai's Optimizer, which Lightning cannot step; use "
        f"{instead} (fastlight's optimizers are torch's, with fastai's names: opt.hypers, opt.set_hyper)"
    )
