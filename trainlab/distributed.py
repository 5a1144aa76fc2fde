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


def shared_stamp():
    """Under torchrun: one timestamp for every rank (rank 0's, through torchrun's store), so that all ranks name
    the same run directory; None when not launched by torchrun or when there is no agent store to share it."""
    import datetime
    from datetime import timedelta

    if not launched_by_torchrun() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          timeout=timedelta(seconds=120))
    run_id, restart = os.environ.get("TORCHELASTIC_RUN_ID", ""), os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)
    key = f"trainlab/stamp/{run_id}/{restart}"
    if os.environ.get("RANK") == "0":
        store.set(key, datetime.datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f"))
    return store.get(key).decode()


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


class SyncBatchNorm(torch.nn.SyncBatchNorm):
    """torch's SyncBatchNorm over the last dim, for (N, C) features and (N, T, C) tokens (like norms.BatchNorm)."""

    def forward(self, x):
        if x.dim() == 3:
            return super().forward(x.transpose(1, 2)).transpose(1, 2)
        return super().forward(x)


def sync_batchnorm(model):
    """Replace every BatchNorm1d of model by a SyncBatchNorm with the same parameters and statistics; the count."""
    count = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.BatchNorm1d):
                sync = SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
                sync.load_state_dict(child.state_dict())
                setattr(module, child_name, sync.to(child.weight.device))
                count += 1
    return count


def prepare(model, device):
    """Before the optimizer sees the parameters: BatchNorm over all processes (SyncBatchNorm) on GPUs; on the CPU,
    where torch's SyncBatchNorm does not run, each process normalizes its own share. Returns a note, or None."""
    if not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()):
        return None
    if device.type == "cuda":
        return f"BatchNorm: SyncBatchNorm in {sync_batchnorm(model)} layers (statistics over every process)"
    return (f"BatchNorm with {dist.get_world_size()} processes on {device.type}: torch's SyncBatchNorm runs only on "
            "GPUs, so each process normalizes over its own share of the batch")


def wrap(model, device):
    """DDP around the model: gradients averaged across ranks in backward."""
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


def resolve_device(name, rank=0):
    """auto: cuda, then mps, then cpu. Several processes on one GPU machine: one GPU per local rank."""
    import torch

    from trainlab.config import ConfigError

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but no CUDA GPU is visible to torch; use trainer.device=auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device=mps but this torch has no MPS (Apple GPU); use trainer.device=auto or cpu")
    if name == "cuda" and rank_world()[1] > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    return torch.device(name)


def _rank_entry(run, cfg, run_dir, parallel_jobs, config_shown):
    """One rank of trainer.devices=N: join the group, train (run: trainlab.train.run), leave."""
    from pathlib import Path

    from trainlab.state import watch_parent

    watch_parent()  # the launching job dies (kill -9): this rank stops too
    init_from_env(resolve_device(cfg["trainer"]["device"]).type)
    try:
        return run(cfg, Path(run_dir), parallel_jobs, config_shown=config_shown)
    finally:
        dist.destroy_process_group()


def launch(run, cfg, run_dir, parallel_jobs=1, config_shown=False):
    """trainer.devices=N: N ranks on this machine through torch.distributed's elastic launch, each calling
    run(cfg, run_dir, ...) (the loop passes itself: this module never imports it); rank 0's summary."""
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
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from trainlab.config import ConfigError

    if cfg["data"]["batch_size"] % config.nproc_per_node:
        raise ConfigError(f"data.batch_size={cfg['data']['batch_size']} does not split into {config.nproc_per_node} "
                          f"equal shares (one per process): use a multiple of {config.nproc_per_node}")
    try:
        results = elastic_launch(config, _rank_entry)(run, cfg, str(run_dir), parallel_jobs, config_shown)
    except ChildFailedError as exc:  # a rank raised: the first failure's own words, a config error as one
        rank, failure = exc.get_first_failure()
        message = failure.message.get("message", str(failure)) if isinstance(failure.message, dict) else \
            str(failure.message)
        if message.startswith("ConfigError: "):
            raise ConfigError(message[len("ConfigError: "):]) from None
        raise RuntimeError(f"rank {rank} of trainer.devices={config.nproc_per_node} failed: {message}") from None
    return results[0]
