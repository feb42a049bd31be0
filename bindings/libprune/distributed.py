"""Pruning inside a torch.distributed job: a DistributedDataParallel model cut identically on
every rank, with the optimizer's state, and a new DDP wrapper for the new shapes.

DDP averages gradients during backward and broadcasts rank 0's buffers before every forward, so
after ``loss.backward()`` the inputs of every criterion (weights, the mean gradients Taylor reads,
batch-norm statistics) are the same on every rank. Rank 0 plans; its plan goes to every rank as
JSON and each one applies it with the same surgery (momentum and Adam moments shrink); a digest of
every parameter and buffer is compared with rank 0's; then the model is wrapped in a new
DistributedDataParallel with the old wrapper's settings (its reducer holds the old shapes).

    ddp = DistributedDataParallel(model)
    ...  loss.backward()  (before optimizer.zero_grad(), for gradient criteria)
    ddp, plan = libprune.distributed.prune(ddp, x, optimizer=opt, ratio=0.3, importance="taylor")

Gradients you accumulate yourself outside DDP (several batches of |w * g|) differ by rank:
``average_gradients`` all-reduces ``.grad`` first. ``examples/python/prune_ddp.py`` runs with
``torchrun --nproc-per-node 2``.
"""
import hashlib

import torch
import torch.distributed as dist
import torch.nn.parallel

from . import _api
from ._libprune import Plan

__all__ = ["prune", "step", "average_gradients", "sync_buffers", "check_replicas"]

# What a new wrapper takes over from the old one.
_DDP_SETTINGS = ("device_ids", "output_device", "broadcast_buffers", "find_unused_parameters",
                 "gradient_as_bucket_view", "static_graph")


def _require_group(where):
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"{where}: torch.distributed is not initialised. Fix: call "
                           "torch.distributed.init_process_group(\"gloo\") first (torchrun sets its environment)")


def _module_of(ddp_model, where):
    if not isinstance(ddp_model, torch.nn.parallel.DistributedDataParallel):
        raise TypeError(f"{where}: expected a torch.nn.parallel.DistributedDataParallel, got "
                        f"{type(ddp_model).__name__}. Fix: pass the DDP wrapper (libprune.prune cuts a plain module)")
    return ddp_model.module


def average_gradients(module, group=None):
    """All-reduces every parameter's ``.grad`` to its mean over the ranks (in place)."""
    _require_group("average_gradients")
    world = dist.get_world_size(group)
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, group=group)
            p.grad.div_(world)


def sync_buffers(module, group=None):
    """Rank 0's buffers (batch-norm statistics) on every rank. DDP broadcasts them before each
    forward, and each rank's training forward then moves its own: after the last step they differ
    until the next forward. The cut and check_replicas need them equal; so does evaluation."""
    _require_group("sync_buffers")
    for b in module.buffers():
        dist.broadcast(b, src=0, group=group)


def _digests(module):
    out = []
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        h = hashlib.blake2b(digest_size=8)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes() if t.dtype != torch.bfloat16
                 else t.detach().cpu().float().numpy().tobytes())
        out.append((name, h.hexdigest()))
    return out


def check_replicas(module, when="", group=None):
    """Raises on every rank when any rank's parameters or buffers differ from rank 0's (bitwise),
    naming the first rank and tensor that differ."""
    _require_group("check_replicas")
    mine = _digests(module)
    theirs = [mine if dist.get_rank(group) == 0 else None]
    dist.broadcast_object_list(theirs, src=0, group=group)
    first = next((n for (n, d), (_, d0) in zip(mine, theirs[0]) if d != d0), None)
    if first is None and len(mine) != len(theirs[0]):
        first = f"the tensor count ({len(mine)} against rank 0's {len(theirs[0])})"
    every = [None] * dist.get_world_size(group)
    dist.all_gather_object(every, first, group=group)
    for rank, name in enumerate(every):
        if name is not None:
            raise RuntimeError(f"rank {rank}'s model differs from rank 0's {when}: first at {name}. Every rank must "
                               "hold the same model. Fix: build and train the model the same way on every rank (same "
                               "seed), and prune through libprune.distributed")


def _rewrap(ddp_model, module):
    settings = {k: getattr(ddp_model, k) for k in _DDP_SETTINGS if hasattr(ddp_model, k)}
    if settings.get("device_ids") is None:
        settings.pop("output_device", None)
    if hasattr(ddp_model, "bucket_bytes_cap"):
        settings["bucket_cap_mb"] = ddp_model.bucket_bytes_cap / (1024 * 1024)
    settings["process_group"] = ddp_model.process_group
    return torch.nn.parallel.DistributedDataParallel(module, **settings)


def _share(ddp_model, example_inputs, optimizer, make_plan, where):
    _require_group(where)
    module = _module_of(ddp_model, where)
    if ddp_model.process_group is not dist.group.WORLD:
        raise ValueError(f"{where}: the DDP model runs on a subgroup; libprune.distributed works on the default "
                         "process group. Fix: wrap the model in DistributedDataParallel without process_group=")
    sync_buffers(module)
    message = [None]
    if dist.get_rank() == 0:
        try:
            message[0] = ("plan", make_plan(module).to_json())
        except Exception as e:  # every rank must learn of it, or the others wait in the broadcast
            message[0] = ("error", f"{type(e).__name__}: {e}")
    dist.broadcast_object_list(message, src=0)
    kind, text = message[0]
    if kind == "error":
        raise RuntimeError(f"{where}: rank 0 could not plan the cut, nothing was changed on any rank: {text}")
    plan = Plan.from_json(text)
    failed = None
    if dist.get_rank() != 0:
        try:
            _api.apply_plan(module, example_inputs, plan, optimizer)
        except Exception as e:  # (all or nothing: this rank is unchanged) the others must hear of it
            failed = f"{type(e).__name__}: {e}"
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, failed)
    for rank, error in enumerate(every):
        if error is not None:
            raise RuntimeError(f"{where}: rank {rank} could not apply rank 0's plan: {error}. The ranks now differ; "
                               "restart them from the last checkpoint")
    check_replicas(module, "after the cut")
    return _rewrap(ddp_model, module), plan


def prune(ddp_model, example_inputs, *, optimizer=None, **options):
    """libprune.prune on every rank of a DDP job: returns (new DDP wrapper, applied Plan).

    Call it on every rank with the same arguments; the old wrapper must not be used afterwards.
    Options are libprune.prune's (ratio, importance, ignored_layers, round_to, ...)."""
    return _share(ddp_model, example_inputs, optimizer,
                  lambda m: _api.prune(m, example_inputs, optimizer=optimizer, **options), "distributed.prune")


def step(pruner, ddp_model, example_inputs, *, ratio=None, optimizer=None):
    """One step of a libprune.Pruner built on ``ddp_model.module`` (on every rank), for schedules:
    rank 0's pruner plans, every rank cuts. Returns (new DDP wrapper, applied Plan)."""
    return _share(ddp_model, example_inputs, optimizer,
                  lambda m: pruner.step(ratio=ratio, optimizer=optimizer), "distributed.step")
