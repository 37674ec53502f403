"""How the one training loop (trainer.py) runs: in one process, or as one rank of a torchrun job.

We distribute nothing ourselves: `torchrun` starts the ranks and sets RANK / WORLD_SIZE /
LOCAL_RANK / MASTER_ADDR; `DataParallel` joins them (NCCL on CUDA, gloo on CPU) with a timeout so
no collective waits forever. A strategy supplies what differs between the three ways to run:

  Single        one process; every agreement is itself, nothing to gather
  DataParallel  DistributedDataParallel: a whole model per rank, gradients averaged; rank 0 alone
                evaluates, samples and writes the checkpoint (with every rank's data position)
  Sharded       FSDP2 fully_shard per block, then the root: every rank evaluates and samples
                together (each forward gathers the shards) and writes its own shards with
                torch.distributed.checkpoint

What rank 0 decides at a step boundary (pause, stop, checkpoint) reaches the other ranks through one
all-reduce of four integers per step (`agree`).
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
from typing import NamedTuple

import torch
import torch.distributed as dist

from ..core.text import first_line
from ..run.files import atomic_write
from ..run.layout import SHARDED_META
from . import checkpoint as ckpt
from .device import pick_device, prepare_device
from .env import env_rank, env_world_size

log = logging.getLogger(__name__)

# Longest a collective may wait for the slowest rank (rank 0 evaluates, samples and writes the
# checkpoints while the others wait): after it, the waiting ranks fail instead of hanging.
TIMEOUT_S = float(os.environ.get("NEUROGEN_TUI_DIST_TIMEOUT", 600))


class Requests(NamedTuple):
    """What the step boundary must do, as every rank sees it."""

    stop: bool = False
    pause: bool = False
    checkpoint: bool = False
    no_data: bool = False
    change: bool = False  # live settings wait on rank 0 (ctl set): shared with every rank at this boundary
    guard: int = 0  # the strongest guard action any rank asks for after the last step (guard.ACTION_LEVEL)


class Single:
    """One process."""

    rank, world_size, is_main, sharded, backend = 0, 1, True, False, ""
    interruptible = True  # a stop request does not wait for a long evaluation

    def start(self, device_spec: str) -> torch.device:
        return prepare_device(pick_device(device_spec))

    @property
    def evaluates(self) -> bool:
        """Whether this rank evaluates, publishes the step and samples."""
        return self.is_main

    def prepare(self, model, say):
        """The model the optimizer will hold (Sharded shards it here)."""
        return model

    def forwards(self, model, compile_: bool):
        """(training forward, evaluation forward)."""
        forward = torch.compile(model) if compile_ else model
        return forward, forward

    def grad_sync(self, model, last_micro_step: bool) -> None:
        """Data parallel: gradients are all-reduced once per step, in the last backward."""

    def agree(self, requests: Requests) -> Requests:
        return requests

    def share(self, obj):
        """Rank 0's `obj` on every rank."""
        return obj

    def failed_anywhere(self, error: str) -> bool:
        return bool(error)

    def job_metrics(self, trainer, metrics, sample_due: bool) -> bool:
        """The whole job's metrics on the main rank; returns whether this step is sampled."""
        return sample_due

    def whole_model(self, model):
        """A context in which the model's parameters are whole (Sharded gathers them)."""
        return contextlib.nullcontext()

    def gather(self, obj) -> list | None:
        """Every rank's `obj` on the main rank (None elsewhere)."""
        return [obj]

    def describe(self, device_name: str) -> str:
        return device_name

    def write_checkpoint(self, trainer):
        """Write the checkpoint of trainer.step; raises OSError or RuntimeError when it cannot."""
        return ckpt.save_checkpoint(trainer.checkpointer.state(), trainer.cfg.checkpoint_dir, trainer.step)

    def finish_checkpoint(self, trainer, written):
        """Every rank wrote its part: the checkpoint's final path."""
        return written

    def abandon_checkpoint(self, trainer) -> None:
        """Some rank could not write its part: remove what the others wrote."""

    def restore_weights(self, trainer, state: dict) -> None:
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])

    def failure(self, exc: BaseException, step: int) -> str | None:
        """A one-line message for a failure only this strategy can explain."""
        return None

    def close(self, finished: bool) -> None:
        """The run is over (`finished`: every rank got to its end)."""


class DataParallel(Single):
    """One rank of a DistributedDataParallel job."""

    def __init__(self) -> None:
        self.rank, self.world_size = env_rank(), env_world_size()
        self.is_main = self.rank == 0

    def start(self, device_spec: str) -> torch.device:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        use_cuda = torch.cuda.is_available() and device_spec in ("auto", "cuda") or device_spec.startswith("cuda")
        device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=TIMEOUT_S),
                                    **({"device_id": device} if use_cuda else {}))
        self.backend = dist.get_backend()
        # flags and metrics travel on the collective's device: CPU for gloo, the GPU for NCCL
        self._coll = device if self.backend == "nccl" else torch.device("cpu")
        return prepare_device(device)

    def forwards(self, model, compile_: bool):
        """Rank 0 evaluates alone on the bare model: the model has no buffers, so DDP's forward
        would hold no collective, but it is meant for training steps."""
        from torch.nn.parallel import DistributedDataParallel

        local = torch.compile(model) if compile_ else model
        device = next(model.parameters()).device
        self.ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        return (torch.compile(self.ddp) if compile_ else self.ddp), local

    def grad_sync(self, model, last_micro_step: bool) -> None:
        self.ddp.require_backward_grad_sync = last_micro_step

    def agree(self, requests: Requests) -> Requests:
        """The requests as the whole job sees them: one small all-reduce (MAX), so a request made
        on rank 0 (control channel) or a signal on any rank takes effect on every rank at the same
        step boundary, a rank out of data ends the epoch for all, and the strongest guard action
        any rank asks for is every rank's."""
        flags = torch.tensor(list(requests), dtype=torch.int32, device=self._coll)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return Requests(*(type(d)(v) for d, v in zip(Requests(), flags.tolist())))

    def share(self, obj):
        """Rank 0's `obj` (live settings: a few small values) on every rank."""
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def failed_anywhere(self, error: str) -> bool:
        return self.agree(Requests(stop=bool(error))).stop

    def gather_floats(self, values: list[float], everywhere: bool = False) -> list[list[float]] | None:
        """Every rank's `values`, as rows indexed by rank, on rank 0 (None elsewhere, unless
        `everywhere`). One collective per optimizer step: the log point, never a micro-step."""
        mine = torch.tensor(values, dtype=torch.float64, device=self._coll)
        rows = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(rows, mine)
        return [r.tolist() for r in rows] if self.is_main or everywhere else None

    def job_metrics(self, trainer, metrics, sample_due: bool) -> bool:
        """Loss and accuracy averaged over ranks, tokens/s summed, memory, CPU and data time the
        largest rank's (the one that starves); the sample decision of rank 0 travels along (a
        sharded job samples on every rank)."""
        nan = float("nan")
        rows = self.gather_floats([metrics.loss, metrics.accuracy, metrics.tokens_per_sec, metrics.gpu_memory_mb,
                                   metrics.rss_mb, float(sample_due), nan if metrics.cpu_util is None else metrics.cpu_util,
                                   metrics.data_time or 0.0,
                                   *[nan if v is None else v for v in (metrics.gpu_util, metrics.gpu_mem_used_mb,
                                                                        metrics.gpu_power_w, metrics.gpu_temp_c,
                                                                        metrics.gpu_mem_total_mb, metrics.gpu_sm_clock_mhz)],
                                   metrics.learning_rate],
                                  everywhere=self.sharded)
        if self.is_main:
            cols = list(zip(*rows))
            metrics.loss = sum(cols[0]) / self.world_size
            metrics.accuracy = sum(cols[1]) / self.world_size
            metrics.tokens_per_sec = sum(cols[2])
            metrics.gpu_memory_mb, metrics.rss_mb = max(cols[3]), max(cols[4])
            metrics.mfu = trainer.mfu(metrics.tokens_per_sec)
            cpu = [c for c in cols[6] if c == c]
            metrics.cpu_util, metrics.data_time = (max(cpu) if cpu else None), max(cols[7])
            known = [[v for v in col if v == v] for col in cols[8:14]]  # the slowest GPU, the fullest, hottest
            (metrics.gpu_util, metrics.gpu_mem_used_mb, metrics.gpu_power_w, metrics.gpu_temp_c,
             metrics.gpu_mem_total_mb, metrics.gpu_sm_clock_mhz) = (
                (min if i in (0, 5) else max)(k) if k else None for i, k in enumerate(known))  # utilisation, clock: lowest
            if min(cols[14]) != max(cols[14]):  # live settings reach every rank at one boundary: never seen
                trainer._say(f"step {metrics.step}: the ranks trained with different learning rates "
                             f"({min(cols[14]):.3g} to {max(cols[14]):.3g})", "error")
            if metrics.step == 1 or metrics.step % trainer.cfg.viz_interval == 0:
                log.info("step %d memory per rank (MB, GPU peak / RSS): %s", metrics.step,
                         ", ".join(f"r{r} {row[3]:.0f}/{row[4]:.0f}" for r, row in enumerate(rows)))
        return bool(rows[0][5]) if rows is not None else False

    def gather(self, obj) -> list | None:
        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def describe(self, device_name: str) -> str:
        return f"{self.world_size} x {device_name} ({self.backend})"

    def write_checkpoint(self, trainer):
        if not self.is_main:  # rank 0 writes every rank's position
            return ckpt.checkpoint_path(trainer.cfg.checkpoint_dir, trainer.step)
        return super().write_checkpoint(trainer)

    def failure(self, exc: BaseException, step: int) -> str | None:
        message = str(exc)
        if isinstance(exc, dist.DistError) or "gloo" in message or "NCCL" in message:
            return f"rank {self.rank} lost contact with another rank at step {step + 1} ({first_line(exc, 160)})"
        return None

    def close(self, finished: bool) -> None:
        """Every rank that finished waits for the others before the process group goes: a rank
        tearing its connections down while a peer still uses them was seen to abort it (gloo)."""
        with contextlib.suppress(Exception):
            if dist.is_initialized():
                if finished:
                    dist.barrier()
                dist.destroy_process_group()


class Sharded(DataParallel):
    """One rank of an FSDP2 job: parameters, gradients and optimizer state sharded over ranks."""

    sharded = True
    interruptible = False  # every rank must make the same collective calls: an evaluation finishes

    @property
    def evaluates(self) -> bool:
        return True  # ranks > 0 publish to an empty bus

    def prepare(self, model, say):
        """Shard each block, then the root (embeddings, final norm, the tied head), before the
        optimizer is built over the shards."""
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        if self.is_main:
            say(f"FSDP2: {len(model.blocks) + 1} shard groups (each block, then embeddings, final norm and "
                f"head) over {self.world_size} ranks")
        return model

    def forwards(self, model, compile_: bool):
        forward = torch.compile(model) if compile_ else model
        return forward, forward

    def grad_sync(self, model, last_micro_step: bool) -> None:
        model.set_requires_gradient_sync(last_micro_step)  # reduce-scatter on the last micro-step only

    def whole_model(self, model):
        """Greedy sampling calls the root's submodules outside its forward: gather the root's own
        parameters (embeddings, head) first; each block gathers its own as it runs."""

        @contextlib.contextmanager
        def gathered():
            model.unshard()
            try:
                yield
            finally:
                model.reshard()

        return gathered()

    def write_checkpoint(self, trainer):
        """Every rank writes its own shards with torch.distributed.checkpoint into
        checkpoint_step_XXXXXX.dcp.partial/, rank 0 adds meta.pt, and the directory takes its final
        name only once every rank succeeded (the trainer agrees on that before renaming)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.api import CheckpointException
        from torch.distributed.checkpoint.state_dict import get_state_dict

        final = ckpt.checkpoint_path(trainer.cfg.checkpoint_dir, trainer.step, sharded=True)
        partial = final.with_name(final.name + ".partial")
        try:
            if self.is_main:
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir(parents=True)
            dist.barrier()
            model_state, optim_state = get_state_dict(trainer.model, trainer.optimizer)
            dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(partial))
            if self.is_main:
                meta = {**trainer.checkpointer.meta(), "model": None, "sharded": "torch.distributed.checkpoint"}
                atomic_write(partial / SHARDED_META, lambda fh: torch.save(meta, fh))
        except CheckpointException as exc:  # raised on every rank if any failed; not an Exception
            raise RuntimeError(first_line(exc)) from None
        return partial

    def finish_checkpoint(self, trainer, partial):
        """Every rank succeeded: the directory takes its final name before any rank goes on."""
        final = partial.with_name(partial.name.removesuffix(".partial"))
        if self.is_main:
            if final.exists():  # the same step saved again (a checkpoint request, then the final one)
                ckpt.remove_checkpoint(final)
            partial.rename(final)
        dist.barrier()
        return final

    def abandon_checkpoint(self, trainer) -> None:
        if self.is_main:
            final = ckpt.checkpoint_path(trainer.cfg.checkpoint_dir, trainer.step, sharded=True)
            shutil.rmtree(final.with_name(final.name + ".partial"), ignore_errors=True)

    def restore_weights(self, trainer, state: dict) -> None:
        """Each rank reads its own shards through DCP (load_checkpoint's safe unpickler read the
        metadata before)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_state, optim_state = get_state_dict(trainer.model, trainer.optimizer)
        loaded = {"model": model_state, "optimizer": optim_state}
        dcp.load(loaded, checkpoint_id=state["sharded_dir"])
        set_state_dict(trainer.model, trainer.optimizer, model_state_dict=loaded["model"],
                       optim_state_dict=loaded["optimizer"])


def strategy_for(cfg) -> Single:
    """The strategy of this process: data parallel under torchrun with WORLD_SIZE > 1."""
    if env_world_size() <= 1:
        return Single()
    return Sharded() if cfg.strategy == "fsdp" else DataParallel()
