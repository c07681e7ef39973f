"""``ModelFiles``: ``save`` / ``load`` of a host's model (and optimizer), fastai's names and file rule.

Files go to ``path/model_dir/<name>.pth`` (``.pth`` added to a name without a suffix, folders
included: ``"tmp/_tmp"`` -> ``models/tmp/_tmp.pth``), written by global rank 0 only, atomically;
``load`` reads with ``torch.load(weights_only=True)``: no code is unpickled.

A model sharded by FSDP2 (:mod:`bridge.sharding`) is saved whole: every rank joins the
gather of the full state dict (a collective, so every rank must call ``save``), rank 0
writes it in the plain form (parameter names; the optimizer's state keyed 0, 1, ... as
``Optimizer.state_dict()``), which loads into the unsharded model in one process. ``load``
into a sharded model gives each rank its shard of the full state read from the file.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover
    from typing_extensions import Self

from .distributed import atomic_save, barrier
from .sharding import is_sharded

__all__ = ["ModelFiles"]


class ModelFiles:
    """``save`` / ``load`` for a host with ``model``, ``opt``, ``path``, ``model_dir`` and ``create_opt``.

    Example:
        >>> learn.save("tmp/_tmp").relative_to(learn.path).as_posix()
        'models/tmp/_tmp.pth'
    """

    model: Any
    opt: torch.optim.Optimizer | None
    path: Path
    model_dir: Path

    def create_opt(self) -> torch.optim.Optimizer:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are."""
        param: torch.nn.Parameter = next(self.model.parameters())
        return param.device

    def _file(self, file: str | os.PathLike[str]) -> Path:
        p = Path(file)
        if p.suffix == "":
            p = p.with_name(p.name + ".pth")
        return p if p.is_absolute() else self.path / self.model_dir / p

    def save(self, file: str | os.PathLike[str], with_opt: bool = True) -> Path:
        """Save the model (and optimizer) to ``path/model_dir/file.pth``; return that path.

        Written by global rank 0 only, atomically.

        Example:
            >>> learn.save("stage1").relative_to(learn.path).as_posix()
            'models/stage1.pth'
        """
        if is_sharded(self.model):
            state: Any = _full_state(self.model, self.opt if with_opt else None)
            written = atomic_save(state, self._file(file))
            barrier()  # a collective already: every rank returns once the file is there
            return written
        state = self.model.state_dict()
        if with_opt and self.opt is not None:
            state = {"model": state, "opt": self.opt.state_dict()}
        return atomic_save(state, self._file(file))

    def load(
        self,
        file: str | os.PathLike[str],
        device: str | torch.device | None = None,
        with_opt: bool = True,
        strict: bool = True,
        **kwargs: Any,
    ) -> Self:
        """Load what ``save`` wrote (``torch.load(weights_only=True)``: no code is unpickled).

        fastai's extra keywords are accepted (its SaveModelCallback passes ``weights_only=False``);
        the file is read weights-only all the same, which what ``save`` writes needs.

        Example:
            >>> _ = learn.save("stage1")
            >>> saved = learn.model.weight.detach().clone()
            >>> _ = torch.nn.init.zeros_(learn.model.weight)
            >>> _ = learn.load("stage1")
            >>> torch.equal(learn.model.weight, saved)
            True
        """
        path = self._file(file)
        if not path.exists():
            raise FileNotFoundError(f"{type(self).__name__}.load: no file {str(path)!r}")
        try:
            state = torch.load(path, map_location=device or self.device, weights_only=True)
        except Exception as exc:
            raise ValueError(
                f"{type(self).__name__}.load: {str(path)!r} is not a loadable model file "
                f"({type(exc).__name__}: {exc}); "
                "only tensors and plain containers are accepted (weights_only=True)"
            ) from exc
        has_opt = isinstance(state, dict) and set(state) == {"model", "opt"}
        model_state = state["model"] if has_opt else state
        sharded = is_sharded(self.model)
        try:
            if sharded:
                _load_full_model(self.model, model_state, strict)
            else:
                self.model.load_state_dict(model_state, strict=strict)
        except RuntimeError as exc:
            raise RuntimeError(f"{type(self).__name__}.load: {str(path)!r} does not fit this model: {exc}") from exc
        if has_opt and with_opt:
            if self.opt is None:
                self.create_opt()
            assert self.opt is not None
            try:
                if sharded:
                    _load_full_opt(self.model, self.opt, state["opt"])
                else:
                    self.opt.load_state_dict(state["opt"])
            except (ValueError, KeyError, RuntimeError) as exc:
                warnings.warn(
                    f"{type(self).__name__}.load: could not load the optimizer state ({exc}); kept a fresh one",
                    stacklevel=2,
                )
        return self


def _full_options(**kw: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def _names(opt: torch.optim.Optimizer, model: Any) -> list[str]:
    """The parameter names of ``opt``'s groups, in the order ``Optimizer.state_dict()`` numbers them."""
    by_id = {id(p): name for name, p in model.named_parameters()}
    return [by_id[id(p)] for group in opt.param_groups for p in group["params"]]


def _full_state(model: Any, opt: torch.optim.Optimizer | None) -> Any:
    """The whole (unsharded) state of a sharded model, on CPU: a collective; rank 0's has the tensors."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    model_state = get_model_state_dict(model, options=_full_options(cpu_offload=True))
    if opt is None:
        return model_state
    full: Any = get_optimizer_state_dict(model, opt, options=_full_options(cpu_offload=True))
    index = {name: i for i, name in enumerate(_names(opt, model))}
    opt_state = {
        "state": {index[name]: value for name, value in full.get("state", {}).items()},
        "param_groups": [
            {**group, "params": [index[name] for name in group["params"]]} for group in full.get("param_groups", [])
        ],
    }
    return {"model": model_state, "opt": opt_state}


def _load_full_model(model: Any, state: dict[str, Any], strict: bool) -> None:
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state, options=_full_options(strict=strict))


def _load_full_opt(model: Any, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load an ``Optimizer.state_dict()``-form state (what ``save`` writes) into a sharded model's optimizer.

    Each per-parameter tensor shaped like its (full) parameter is cut into this rank's shard,
    as the parameter is (``distribute_tensor`` over the parameter's mesh and placements).
    """
    from torch.distributed.tensor import DTensor, distribute_tensor

    groups = state["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in opt.param_groups]:
        raise ValueError("the saved optimizer's groups do not match this optimizer's")
    params = [p for group in opt.param_groups for p in group["params"]]
    for group, saved in zip(opt.param_groups, groups, strict=True):
        group.update({k: v for k, v in saved.items() if k != "params"})
    opt.state.clear()
    for i, values in state["state"].items():
        p = params[int(i)]
        local: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(p, DTensor) and isinstance(value, torch.Tensor) and value.shape == p.shape:
                value = distribute_tensor(value.to(p.device), p.device_mesh, p.placements)
            local[key] = value
        opt.state[p] = local
