"""Several processes with torch.distributed: DistributedDataParallel, gloo on CPU, nccl on GPU.

Two ways in, one code path: `torchrun --nproc_per_node=N -m trainlab ...` (every rank runs the CLI; rank 0 names
the run directory and the others use it), or `trainer.devices=N` (the Hydra job launches N ranks with torch's
elastic launch API, so Hydra's run and sweep directories stay as they are). Each rank trains on its own shard of
every batch; only rank 0 writes files.

    rank, world = rank_world()
    x, y = shard(x, y, rank, world)          # rows rank::world of the global batch
    net = wrap(model, device)                # DDP: gradients averaged across ranks in backward
"""
import os

import torch
import torch.distributed as dist


def rank_world():
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def launched_by_torchrun():
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def init_from_env(device_type):
    """Join the process group torchrun (or our launcher) described in the environment; no-op for one process."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)


def shard(x, y, rank, world):
    """This rank's share of the global batch; a batch size that world does not divide is refused earlier."""
    if world == 1:
        return x, y
    return x[rank::world], y[rank::world]


def wrap(model, device):
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def mean(value, device):
    """The mean of a float over all ranks (the logged loss of the global batch)."""
    t = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def any_rank(flag, device):
    """True on every rank if it is true on any (a stop request, early stopping decided by rank 0)."""
    t = torch.tensor(int(bool(flag)), device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(obj):
    """A list of obj from every rank, in rank order (RNG states for a checkpoint)."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj, src=0):
    """obj of rank src, on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _rank_entry(cfg, run_dir, parallel_jobs):
    """One rank of trainer.devices=N: join the group, train, leave."""
    from pathlib import Path

    from trainlab.state import watch_parent
    from trainlab.train import resolve_device, run

    watch_parent()  # the launching job dies (kill -9): this rank stops too
    init_from_env(resolve_device(cfg["trainer"]["device"]).type)
    try:
        return run(cfg, Path(run_dir), parallel_jobs)
    finally:
        dist.destroy_process_group()


def launch(cfg, run_dir, parallel_jobs=1):
    """trainer.devices=N: N ranks on this machine through torch.distributed's elastic launch; rank 0's summary."""
    import socket
    import uuid

    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=cfg["trainer"]["devices"],
                          run_id=f"trainlab-{uuid.uuid4().hex[:8]}", rdzv_backend="c10d",
                          rdzv_endpoint=f"127.0.0.1:{port}", max_restarts=0, monitor_interval=0.5,
                          start_method="spawn")
    results = elastic_launch(config, _rank_entry)(cfg, str(run_dir), parallel_jobs)
    return results[0]
