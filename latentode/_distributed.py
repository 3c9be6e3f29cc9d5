"""Data-parallel training on ``torch.distributed``: who this process is, and the few collectives fit needs.

A fit is data-parallel when ``torchrun`` (or any launcher that sets ``WORLD_SIZE``, ``RANK``
and ``LOCAL_RANK``) started more than one process, or when the caller initialised a process
group itself. Every rank then reads the same data, builds the same global permutation of
series from the same seed, and trains on its own rows of every global batch; the module is
wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`, which averages the gradients.
Without those variables (or with ``distributed=False``) nothing here runs a collective and the
fit is exactly the single-process one.

Backends: gloo on CPU, NCCL on CUDA with one device per ``LOCAL_RANK``.
"""

from __future__ import annotations

import atexit
import datetime
import hashlib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import torch
import torch.distributed as dist

from ._validation import InputTypeError, InputValueError

#: How long a collective waits for the other ranks before it fails (a rank that died is seen at once
#: by gloo, as a closed connection; this bounds the wait for one that hangs).
TIMEOUT = datetime.timedelta(minutes=10)
ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
_ENDED = False  # finish() ended a job in this process


@dataclass(frozen=True)
class Context:
    """Where this process stands in the job.

    Attributes
    ----------
    world_size, rank, local_rank : int
        1, 0, 0 for a single process.
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """True when there are other ranks to talk to."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that shows progress and writes files."""
        return self.rank == 0


SINGLE = Context()


def _env_int(name: str) -> int:
    text = os.environ[name]
    try:
        return int(text)
    except ValueError as err:
        raise InputValueError(f"environment variable {name}={text!r} is not an integer (set by torchrun).") from err


def launched() -> bool:
    """True when a launcher (torchrun) started this process as one of several."""
    return all(k in os.environ for k in ENV) and _env_int("WORLD_SIZE") > 1


def resolve(option, device: torch.device) -> Context:
    """The :class:`Context` of a fit for the estimator's ``distributed`` option.

    ``"auto"``: data-parallel when a process group is already initialised (by the caller)
    or when launched by torchrun with ``WORLD_SIZE > 1``; single-process otherwise.
    ``True``: data-parallel, and an error when neither holds. ``False``: single-process.
    A process group this function starts (gloo on CPU, NCCL on CUDA) stays up for later
    fits and is destroyed at exit.
    """
    if not isinstance(option, (bool, np.bool_)) and not (isinstance(option, str) and option == "auto"):
        raise InputTypeError(f"distributed must be 'auto', True or False, got {option!r}.")
    if option is False or option is np.False_:
        return SINGLE
    if not (dist.is_available() and (dist.is_initialized() or launched())):
        if option is True or option is np.True_:
            raise InputValueError("distributed=True needs a torch.distributed job: launch with torchrun "
                                  "(e.g. torchrun --nproc_per_node=2 script.py) or call "
                                  "torch.distributed.init_process_group first.")
        return SINGLE
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {}
        if device.type == "cuda" and device.index is not None and \
                "device_id" in inspect.signature(dist.init_process_group).parameters:  # torch >= 2.3
            kwargs["device_id"] = device
        dist.init_process_group(backend, timeout=TIMEOUT, **kwargs)
        atexit.register(_shutdown)
    local = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else dist.get_rank()
    return Context(dist.get_world_size(), dist.get_rank(), local)


def _shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def finish() -> None:
    """End a job that succeeded: every rank waits for the others, then destroys the process group.

    Call it on every rank once the work is done (after rank 0 has written its files), then
    leave with :func:`exit_process`. Not for an error path: a barrier with a rank that died
    waits for the timeout.
    """
    global _ENDED
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        _ENDED = True


def exit_process(code: int) -> NoReturn:
    """Exit with ``code``; after :func:`finish` ended a job here, without the interpreter's teardown.

    With torch 2.13 on gloo, a rank of a 2-process CPU job aborted in the C++ teardown at
    exit after all its work, the process group destroyed and no Python frame left
    ("terminate called without an active exception", SIGABRT), in about 1 of 30 runs of
    ``torchrun --nproc_per_node=2 -m latentode fit``; torchrun then fails the whole job. The
    process has written and flushed what it made, so it leaves with :func:`os._exit`.
    """
    if _ENDED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def device_for(device: torch.device) -> torch.device:
    """One CUDA device per local rank: a bare "cuda" becomes ``cuda:LOCAL_RANK`` under torchrun."""
    if device.type != "cuda" or device.index is not None or not launched():
        return device
    local = _env_int("LOCAL_RANK")
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def broadcast_seed(ctx: Context, seed: int) -> int:
    """Rank 0's ``seed`` on every rank (so ``random_state=None`` still gives one permutation)."""
    if not ctx.active:
        return seed
    box = [seed]
    dist.broadcast_object_list(box, src=0)
    return int(box[0])


def fingerprint(*arrays) -> str:
    """A short hash of numpy arrays' shapes and bytes."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
    return h.hexdigest()


def check_same_data(ctx: Context, digest: str, what: str = "X") -> None:
    """Raise on every rank (the same error) unless every rank holds data with the same ``digest``."""
    if not ctx.active:
        return
    digests = [None] * ctx.world_size
    dist.all_gather_object(digests, digest)
    differ = [r for r, d in enumerate(digests) if d != digests[0]]
    if differ:
        raise InputValueError(
            f"{what} differs between ranks (ranks {differ} hold other data than rank 0): under torchrun every "
            "rank must call fit on the same frame; each trains on its own rows of every global batch.")


def all_reduce_sum(ctx: Context, tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over the ranks, in place (unchanged for one process)."""
    if ctx.active:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(ctx: Context, tensor: torch.Tensor) -> torch.Tensor:
    """Maximum of ``tensor`` over the ranks, in place (unchanged for one process)."""
    if ctx.active:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_gather_arrays(ctx: Context, arrays: list) -> list:
    """Concatenate each of several numpy arrays over the ranks, in rank order."""
    if not ctx.active:
        return arrays
    gathered = [None] * ctx.world_size
    dist.all_gather_object(gathered, arrays)
    return [np.concatenate([g[k] for g in gathered]) for k in range(len(arrays))]


def shard_rows(n: int, ctx: Context) -> np.ndarray:
    """This rank's rows of a global batch of ``n``: contiguous, sizes differing by at most one."""
    return np.array_split(np.arange(n), ctx.world_size)[ctx.rank]


def shard_series(n: int, ctx: Context) -> np.ndarray:
    """This rank's series of ``n`` for evaluation: every ``world_size``-th, from ``rank``."""
    return np.arange(ctx.rank, n, ctx.world_size)


def wrap(module: torch.nn.Module, ctx: Context, device: torch.device):
    """``module`` in :class:`~torch.nn.parallel.DistributedDataParallel` (itself for one process).

    DDP broadcasts rank 0's parameters at construction, so every rank starts from the same
    weights. Buffers (the likelihood's variable weights) are the same on every rank and are not
    re-broadcast. Every trainable parameter takes part in every training loss (a fixed noise is
    not trainable), so DDP need not search the graph for unused ones
    (``tests/test_distributed.py::test_every_trainable_parameter_gets_a_gradient``).
    """
    if not ctx.active:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False,
                                                     find_unused_parameters=False)
