"""Sharded training (FSDP2): the Learner's sharding policy, strategy checks and fresh strategy instances.

A Learner trained with ``strategy=ModelParallelStrategy(data_parallel_size=N, tensor_parallel_size=1)``
has its model sharded by ``torch.distributed.fsdp.fully_shard`` in the module's ``configure_model``
hook. The default policy (:func:`default_policy`) shards each direct child that holds parameters,
then the root; ``learn.shard_policy`` (a function ``policy(model, mesh)``) replaces it.

Example:
    >>> import torch
    >>> is_sharded(torch.nn.Linear(2, 1))
    False
    >>> fresh_strategy("ddp")
    'ddp'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = [
    "ShardPolicy",
    "check_strategy",
    "default_policy",
    "fresh_strategy",
    "is_model_parallel",
    "is_sharded",
    "remap_optimizer",
    "shard_model",
]

#: A sharding policy: applies ``fully_shard`` to ``model`` (in place) over the data-parallel ``mesh``.
ShardPolicy = Callable[[nn.Module, Any], None]


def is_model_parallel(strategy: object) -> bool:
    """True for Lightning's ``ModelParallelStrategy`` (FSDP2 / tensor parallel), the one that calls ``configure_model``.

    Example:
        >>> from lightning.pytorch.strategies import ModelParallelStrategy
        >>> is_model_parallel(ModelParallelStrategy()), is_model_parallel("ddp")
        (True, False)
    """
    from lightning.pytorch.strategies import ModelParallelStrategy

    return isinstance(strategy, ModelParallelStrategy)


def is_sharded(model: nn.Module) -> bool:
    """True if ``model`` (or a submodule) was sharded by ``fully_shard`` (its parameters are DTensors).

    Example:
        >>> is_sharded(torch.nn.Linear(2, 1))
        False
    """
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


def _strategy_class_names(strategy: object) -> set[str]:
    """The class names (MRO) of ``strategy``: an instance, or a name in Lightning's strategy registry."""
    cls: type = type(strategy)
    if isinstance(strategy, str):
        from lightning.pytorch.strategies import StrategyRegistry

        name = strategy.lower()  # Lightning lower-cases strategy names too
        if name not in StrategyRegistry:  # (its .get() would build the strategy)
            return set()
        cls = dict.__getitem__(StrategyRegistry, name)["strategy"]
    return {c.__name__ for c in cls.__mro__}


def check_strategy(strategy: object) -> None:
    """Refuse, at fit start, the strategies a Learner cannot run correctly.

    ``strategy`` is an instance or a registered name (``"fsdp"``, ``"deepspeed_stage_2"``).
    DeepSpeed owns the optimizer step and the backward (the Learner's batch does both itself).
    FSDP1 (``FSDPStrategy``, ``strategy="fsdp"``) runs ``training_step`` inside the FSDP root's
    forward, where the Learner's batch (manual optimization) runs backward and the step: FSDP1
    asserts there (``Expects BACKWARD_PRE or BACKWARD_POST state``) or, with an ``auto_wrap_policy``,
    keeps adding each step's reduced gradient to the next one; after any run the model holds only
    this rank's flat shards, which ``save`` would write as the whole model (Lightning issues #19626,
    #19685). Tensor parallelism splits parameters and activations along dimensions that the
    Learner's callbacks (``GradientClip``'s norm aside), ``get_preds`` and ``save`` read whole.

    Example:
        >>> from lightning.pytorch.strategies import ModelParallelStrategy
        >>> check_strategy(ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=2))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Learner: tensor parallelism (tensor_parallel_size=2) is not supported: ...
        >>> check_strategy("fsdp")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Learner: `strategy`='fsdp' (Lightning's FSDPStrategy, FSDP1) is not supported: ...
        >>> check_strategy(ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1))
    """
    names = _strategy_class_names(strategy)
    if "DeepSpeedStrategy" in names:
        raise ValueError(
            "Learner: DeepSpeed is not supported: it owns backward and the optimizer step, which the Learner's "
            "fastai batch runs itself (cancels, GradientClip, GradientAccumulation); use "
            "strategy=ModelParallelStrategy(data_parallel_size=N, tensor_parallel_size=1) for sharded training"
        )
    if "FSDPStrategy" in names:
        given = repr(strategy) if isinstance(strategy, str) else f"{type(strategy).__name__}(...)"
        raise ValueError(
            f"Learner: `strategy`={given} (Lightning's FSDPStrategy, FSDP1) is not supported: Lightning runs "
            "training_step inside the FSDP root's forward, and the Learner's fastai batch runs backward and the "
            "optimizer step there (manual optimization), which FSDP1 cannot do (it fails, or with an "
            "auto_wrap_policy accumulates gradients across steps; Lightning issues #19626, #19685). Accepted for "
            "sharded training: strategy=ModelParallelStrategy(data_parallel_size=<number of processes>, "
            "tensor_parallel_size=1) (FSDP2, torch's fully_shard; on GPUs and on CPU)"
        )
    if is_model_parallel(strategy):
        tp = getattr(strategy, "_tensor_parallel_size", 1)
        if tp not in (1, "auto") or (tp == "auto" and getattr(strategy, "num_processes", 1) > 1):
            raise ValueError(
                f"Learner: tensor parallelism (tensor_parallel_size={tp!r}) is not supported: the Learner's "
                "callbacks, save and get_preds read full parameters and outputs; use "
                "ModelParallelStrategy(data_parallel_size=<number of processes>, tensor_parallel_size=1) (FSDP2)"
            )


def fresh_strategy(strategy: Any) -> Any:
    """A new, unused copy of a ``ModelParallelStrategy`` (Lightning refuses an instance a Trainer used); else as is.

    The copy of Lightning's own class is a :class:`~bridge.sharded_checkpoint.AtomicModelParallelStrategy`.

    Each fit / validate / get_preds / lr_find of a Learner builds its own Trainer; the user's
    instance is never handed to one, so its settings (``"auto"`` included) stay as given.

    Example:
        >>> from lightning.pytorch.strategies import ModelParallelStrategy
        >>> s = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
        >>> t = fresh_strategy(s)
        >>> t is s, type(t).__name__, t._data_parallel_size
        (False, 'AtomicModelParallelStrategy', 2)
    """
    if not is_model_parallel(strategy):
        return strategy
    from lightning.pytorch.strategies import ModelParallelStrategy

    from .sharded_checkpoint import AtomicModelParallelStrategy

    # Lightning's own class gets sharded checkpoints that replace the last one atomically; a
    # user's subclass is kept as it is (its save_checkpoint may be its own).
    cls = AtomicModelParallelStrategy if type(strategy) is ModelParallelStrategy else type(strategy)
    return cls(
        data_parallel_size=strategy._data_parallel_size,
        tensor_parallel_size=strategy._tensor_parallel_size,
        save_distributed_checkpoint=strategy._save_distributed_checkpoint,
        process_group_backend=strategy._process_group_backend,
        timeout=strategy._timeout,
    )


def default_policy(model: nn.Module, mesh: Any) -> None:
    """``fully_shard`` each direct child of ``model`` that holds parameters, then ``model`` itself.

    Each child is gathered only for its own forward and backward; the root holds what is left
    (parameters of its own, if any) and drives the schedule.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
        >>> [name for name, child in model.named_children() if next(child.parameters(), None) is not None]
        ['0', '2']
    """
    from torch.distributed.fsdp import fully_shard

    for child in model.children():
        if next(child.parameters(), None) is not None:
            fully_shard(child, mesh=mesh)
    fully_shard(model, mesh=mesh)


def shard_model(model: nn.Module, mesh: Any, policy: ShardPolicy | None = None) -> bool:
    """Apply ``policy`` (default: :func:`default_policy`) unless ``model`` is already sharded; True if it sharded.

    ``mesh`` is the strategy's device mesh; the data-parallel sub-mesh is what the policy gets.

    Example:
        >>> shard_model(torch.nn.Linear(2, 1), None, policy=lambda model, mesh: None)
        True
    """
    if is_sharded(model):
        return False
    if policy is not None and not callable(policy):
        raise TypeError(f"Learner: `shard_policy` must be a function policy(model, mesh), got {policy!r}")
    dp_mesh = mesh["data_parallel"] if mesh is not None and "data_parallel" in (mesh.mesh_dim_names or ()) else mesh
    (policy or default_policy)(model, dp_mesh)
    return True


def remap_optimizer(opt: torch.optim.Optimizer, before: dict[str, nn.Parameter], model: nn.Module) -> None:
    """Point ``opt``'s groups at ``model``'s parameters after sharding replaced them (matched by name).

    ``fully_shard`` registers new (DTensor) parameters; an optimizer built before would step the
    old ones. Hyper-parameters and groups are kept; per-parameter state (momentum) is dropped,
    since it had the old, unsharded shape.

    Example:
        >>> m = torch.nn.Linear(2, 1); opt = torch.optim.SGD(m.parameters(), lr=0.1)
        >>> before = dict(m.named_parameters()); m.weight = torch.nn.Parameter(m.weight.detach().clone())
        >>> remap_optimizer(opt, before, m); opt.param_groups[0]["params"][0] is m.weight
        True
    """
    by_id = {id(p): name for name, p in before.items()}
    after = dict(model.named_parameters())
    for group in opt.param_groups:
        group["params"] = [after[by_id[id(p)]] if id(p) in by_id else p for p in group["params"]]
    opt.state.clear()
