"""``ModelFiles``: ``save`` / ``load`` of a host's model (and optimizer), fastai's names and file rule.

Files go to ``path/model_dir/<name>.pth`` (``.pth`` added to a name without a suffix, folders
included: ``"tmp/_tmp"`` -> ``models/tmp/_tmp.pth``), written by global rank 0 only, atomically;
``load`` reads with ``torch.load(weights_only=True)``: no code is unpickled.
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

from .distributed import atomic_save

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
        state: Any = self.model.state_dict()
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
        try:
            self.model.load_state_dict(model_state, strict=strict)
        except RuntimeError as exc:
            raise RuntimeError(f"{type(self).__name__}.load: {str(path)!r} does not fit this model: {exc}") from exc
        if has_opt and with_opt:
            if self.opt is None:
                self.create_opt()
            assert self.opt is not None
            try:
                self.opt.load_state_dict(state["opt"])
            except (ValueError, KeyError) as exc:
                warnings.warn(
                    f"{type(self).__name__}.load: could not load the optimizer state ({exc}); kept a fresh one",
                    stacklevel=2,
                )
        return self
