"""Several processes, one model: DistributedDataParallel (DDP) for the fine-tuning command and the benchmark.

Under DDP every process holds a full copy of the model, trains on its own share of each batch, and after
``backward()`` the processes all-reduce (average) their gradients, so every copy takes the same step. What
is all-reduced is exactly the gradients of the *trainable* parameters - which is why LoRA's DDP traffic is
a small fraction of full fine-tuning's. :func:`ddp_comm` measures it.

* :func:`setup` / :func:`teardown`: start and end ``torch.distributed`` when launched by ``torchrun``
  (``python -m lora_lab.finetune`` uses them; nccl on GPUs, gloo on CPUs).
* :func:`ddp_comm`: bytes all-reduced per training step, counted by a DDP communication hook, with
  ``world`` gloo processes on this machine.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

import torch

from ..data.sms import collate
from ..models.gpt2 import GPT, PRESETS
from ..utils.machine import pick_device
from .loop import make_optimizer, train_step
from .methods import apply_method, parse_method

__all__ = ["setup", "teardown", "ddp_comm"]


def setup(device_arg: str | None = None) -> tuple[int, int, torch.device]:
    """Initialise torch.distributed when launched by ``torchrun`` (``WORLD_SIZE`` > 1); returns
    ``(ddp_rank, world_size, device)``. Alone (no ``torchrun``) it starts nothing: ``(0, 1, device)``.

    Each process on a GPU machine takes the GPU of its ``LOCAL_RANK`` and talks nccl; on CPUs gloo."""

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, pick_device(device_arg)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available() and device_arg in (None, "cuda"):
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device(device_arg or "cpu"), "gloo"
    torch.distributed.init_process_group(backend)
    return torch.distributed.get_rank(), world, device


def teardown() -> None:
    """End torch.distributed if it was started: every process waits for the others first, so none tears
    down gloo/nccl while another still has a collective in flight."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(ddp_rank, world, port, shape, method, out_file):
    """One process of :func:`ddp_comm`: two training steps of a random GPT-2 classifier under DDP, with a
    hook that counts the bytes of every gradient bucket DDP all-reduces."""
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn.parallel import DistributedDataParallel as DDP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", rank=ddp_rank, world_size=world)
    torch.manual_seed(0)
    model = GPT(PRESETS[shape]).to_classifier(2)
    name, rank = parse_method(method)
    apply_method(model, name, rank or 16, rank or 16)
    ddp = DDP(model)
    sent = []

    def counting_hook(state, bucket):
        sent.append(bucket.buffer().numel() * bucket.buffer().element_size())
        return allreduce_hook(state, bucket)

    ddp.register_comm_hook(None, counting_hook)
    opt = make_optimizer(model, 1e-4)
    batch = collate([([1, 2, 3, 4] * 4, 0), ([5, 6] * 5, 1)])
    for _ in range(2):  # the second step is the steady state (the first also builds DDP's buckets)
        sent.clear()
        train_step(ddp, batch, opt, torch.device("cpu"))
    if ddp_rank == 0:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        Path(out_file).write_text(json.dumps({"shape": shape, "method": method, "world_size": world,
                                              "bytes_allreduced_per_step": sum(sent), "buckets": len(sent),
                                              "trainable_params": trainable}))
    dist.barrier()  # let every rank finish its collectives before gloo is torn down
    del ddp
    dist.destroy_process_group()


def ddp_comm(shape="gpt2", methods=("full", "lora-16"), world=2) -> list[dict]:
    """Bytes each process all-reduces per training step under DDP, one row per method (``full``,
    ``last-block``, ``lora-<rank>``), counted by a communication hook (the gradient buckets DDP actually
    syncs), with ``world`` gloo processes on this machine."""
    import torch.multiprocessing as mp

    for method in methods:
        parse_method(method)  # a typo stops here, with the accepted names, not inside a spawned process
    rows = []
    for method in methods:
        with tempfile.TemporaryDirectory() as tmp:
            out = f"{tmp}/r.json"
            mp.spawn(_ddp_worker, args=(world, _free_port(), shape, method, out), nprocs=world, join=True)
            rows.append(json.loads(Path(out).read_text()))
    return rows
