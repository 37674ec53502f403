"""Data-parallel training on torch.distributed: process group from torchrun's environment, the
per-step agreement on control requests, job-wide metrics, and the rank workers that write nothing.

We do not distribute anything ourselves: `torchrun` (torch.distributed.run, the elastic launcher)
starts the ranks and sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; `init_from_env` joins them
(NCCL on CUDA, gloo on CPU) with a timeout so no collective waits forever; the trainer wraps the
model in DistributedDataParallel. Rank 0 alone writes files and serves the control channel; what
it decides at a step boundary (pause, stop, checkpoint) reaches the other ranks through one
all-reduce of four integers per step (`DistContext.agree`).
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
import time

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

# Longest a collective may wait for the slowest rank (rank 0 evaluates, samples and writes the
# checkpoints while the others wait): after it, the waiting ranks fail instead of hanging.
TIMEOUT_S = float(os.environ.get("NEUROGEN_TUI_DIST_TIMEOUT", 600))
LOCK_HELD_ENV = "NEUROGEN_TUI_LOCK_HELD"  # set by the launcher, which holds the run dir's lock


def env_rank() -> int:
    """This process's global rank as torchrun set it (0 outside torchrun)."""
    return int(os.environ.get("RANK", 0))


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def under_launcher() -> bool:
    """True inside a process that torchrun started (it must not launch ranks of its own)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "WORLD_SIZE" in os.environ


def holds_run_dir() -> bool:
    """Whether this process takes the run dir's lock and may archive a previous run: rank 0,
    unless the launcher that started it already holds the lock."""
    return env_rank() == 0 and LOCK_HELD_ENV not in os.environ


def job_world_size(cfg) -> int:
    """Ranks in the job this process belongs to or is about to launch."""
    return env_world_size() if under_launcher() else cfg.nproc_per_node


def check_world_size(state: dict, world_size: int, strategy: str = "ddp") -> None:
    """Refuse, before anything starts, a checkpoint written by another number of ranks, or by the
    other strategy (a sharded directory and a single file hold the model differently)."""
    from .config import ConfigError

    saved = int(state.get("world_size", 1))
    if saved != world_size:
        raise ConfigError(f"cannot resume: the checkpoint was written by {saved} rank(s) and this run would have "
                          f"{world_size}; resume it with --nproc-per-node {saved} ({saved} processes in all under torchrun)")
    sharded = bool(state.get("sharded_dir"))
    if sharded and strategy != "fsdp":
        raise ConfigError(f"cannot resume: {state['sharded_dir']} is a sharded checkpoint of a --strategy fsdp run; "
                          f"resume it with --strategy fsdp --nproc-per-node {saved}")
    if not sharded and strategy == "fsdp" and world_size > 1:
        raise ConfigError("cannot resume with --strategy fsdp from a single-file checkpoint (written by one process "
                          "or --strategy ddp); resume it with --strategy ddp")


class DistContext:
    """One rank's view of the job: its rank, the world, its device, and the few collectives the
    trainer needs. Built by init_from_env only when WORLD_SIZE > 1."""

    def __init__(self, rank: int, world_size: int, local_rank: int, device: torch.device):
        self.rank, self.world_size, self.local_rank, self.device = rank, world_size, local_rank, device
        self.is_main = rank == 0
        self.backend = dist.get_backend()
        # flags and metrics travel on the collective's device: CPU for gloo, the GPU for NCCL
        self._coll_device = device if self.backend == "nccl" else torch.device("cpu")

    def agree(self, stop: bool, pause: bool, checkpoint: bool, no_data: bool = False) -> tuple[bool, bool, bool, bool]:
        """(stop, pause, checkpoint, no_data) as the whole job sees them: one 4-integer all-reduce
        (MAX), so a request made on rank 0 (control channel) or a signal on any rank takes effect
        on every rank at the same step boundary, and a rank out of data ends the epoch for all."""
        flags = torch.tensor([stop, pause, checkpoint, no_data], dtype=torch.int32, device=self._coll_device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        s, p, c, n = (bool(v) for v in flags.tolist())
        return s, p, c, n

    def gather_floats(self, values: list[float], everywhere: bool = False) -> list[list[float]] | None:
        """Every rank's `values`, as rows indexed by rank, on rank 0 (None elsewhere, unless
        `everywhere`). One collective per optimizer step: the log point, never a micro-step."""
        mine = torch.tensor(values, dtype=torch.float64, device=self._coll_device)
        rows = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(rows, mine)
        return [r.tolist() for r in rows] if self.is_main or everywhere else None

    def barrier(self) -> None:
        dist.barrier()

    def gather_objects(self, obj) -> list | None:
        """Every rank's `obj` (picklable) on rank 0, None elsewhere."""
        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def no_sync(self, ddp_model, skip_sync: bool):
        """DDP's no_sync on accumulation micro-steps: gradients are all-reduced once per optimizer
        step, on the last micro-step's backward, not once per micro-batch."""
        return ddp_model.no_sync() if skip_sync else contextlib.nullcontext()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if dist.is_initialized():
                dist.destroy_process_group()


def init_from_env(device_spec: str) -> DistContext | None:
    """Join the job torchrun started (WORLD_SIZE > 1), or None for a single process."""
    world = env_world_size()
    if world <= 1:
        return None
    rank, local_rank = env_rank(), int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and device_spec in ("auto", "cuda") or device_spec.startswith("cuda")
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=TIMEOUT_S),
                                **({"device_id": device} if use_cuda else {}))
    return DistContext(rank, world, local_rank, device)


def accumulation(tokens_per_chunk: int, tokens_per_micro_batch: int, world_size: int) -> tuple[int, str]:
    """Micro-steps per rank so that one optimizer step still trains on about --tokens-per-chunk
    tokens across the job, and a note when the numbers do not divide exactly."""
    per_step = tokens_per_micro_batch * world_size
    accum = max(1, round(tokens_per_chunk / per_step))
    note = ""
    if accum * per_step != tokens_per_chunk:
        note = (f"--tokens-per-chunk {tokens_per_chunk} is not a multiple of batch x seq-len x ranks "
                f"({tokens_per_micro_batch} x {world_size} = {per_step}): each step trains on "
                f"{accum * per_step} tokens ({accum} micro-batch(es) per rank)")
    return accum, note


# ---- ranks other than 0 ---------------------------------------------------------------------------
def setup_worker_logging(rank: int) -> None:
    """Ranks > 0 write nothing to the run dir: errors only, to stderr, marked with the rank."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.ERROR)
    handler.setFormatter(logging.Formatter(f"[rank {rank}] %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.ERROR)
    from .run import quiet_third_party

    quiet_third_party()


def run_worker(cfg, resume) -> int:
    """A rank other than 0: the trainer with no subscribers but an error line on stderr."""
    from .events import EventBus, RunFailed

    from .headless import install_stop_signals

    rank = env_rank()
    setup_worker_logging(rank)
    trainer = DistributedTrainer(cfg, EventBus(), resume)
    install_stop_signals(trainer.request_stop, lambda _msg: None)  # stop with the others, at a boundary
    result = trainer.run()
    if isinstance(result, RunFailed):
        print(f"neurogen-tui: error: [rank {rank}] {result.error}", file=sys.stderr)
        return 1
    return 0


# ---- the data-parallel trainer ----------------------------------------------------------------------
class _StepBatches:
    """The batch source the trainer's train_step reads: one optimizer step's micro-batches taken
    ahead, so every rank knows it has data before any rank starts the step (a rank that ran dry
    mid-step would leave the others waiting in the gradient all-reduce)."""

    def __init__(self, stream):
        self.stream = stream
        self._ready: list = []

    def fill(self, n: int) -> bool:
        while len(self._ready) < n:
            batch = self.stream.next_batch()
            if batch is None:
                return False
            self._ready.append(batch)
        return True

    def give_back(self) -> None:
        self.stream.unread(self._ready)
        self._ready = []

    def next_batch(self):
        return self._ready.pop(0) if self._ready else self.stream.next_batch()

    def state(self) -> dict:
        return self.stream.state()


def _trainer_base():
    from .trainer import Trainer

    return Trainer


class DistributedTrainer(_trainer_base()):
    """The Trainer on one rank of a torchrun job: DDP model, this rank's share of the data, and
    control requests, metrics and checkpoints agreed across ranks at step boundaries."""

    def setup(self) -> None:
        from torch.nn.parallel import DistributedDataParallel

        self.dist = init_from_env(self.cfg.device)
        self.data_rank, self.data_world = self.dist.rank, self.dist.world_size
        self.sharded = self.cfg.strategy == "fsdp"
        self._sample_agreed = False
        self._job_name = False  # the MFU table needs the bare device name
        super().setup()
        self._job_name = True
        self._accum, note = accumulation(self.cfg.tokens_per_chunk, self.cfg.tokens_per_micro_batch, self.data_world)
        if note and self.dist.is_main:
            self._say(note, "warning")
        docs = self.batches.docs
        if self.dist.is_main:
            self._say(f"data: each of {self.data_world} ranks reads its own {docs.shards // self.data_world} of "
                      f"{docs.shards} shards" if docs.by_shard else
                      f"data: {docs.shards} shard(s) do not divide among {self.data_world} ranks; each rank reads "
                      f"the whole stream and trains on every {self.data_world}th document")
        self._local_forward = self.forward
        if not self.sharded:
            # the model has no buffers, so DDP's forward holds no collective: rank 0 can evaluate alone
            self.ddp = DistributedDataParallel(self.model,
                                               device_ids=[self.device.index] if self.device.type == "cuda" else None)
            self.forward = torch.compile(self.ddp) if self.cfg.compile else self.ddp
        self.batches = _StepBatches(self.batches)

    # ---- FSDP2 (--strategy fsdp): parameters, gradients and optimizer state sharded over ranks ---------
    def _prepare_model(self, model):
        """With fsdp, shard each block and then the root (embeddings, final norm, the tied head)
        with FSDP2's fully_shard before the optimizer is built over the shards."""
        if not self.sharded:
            return model
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        if self.dist.is_main:
            self._say(f"FSDP2: {len(model.blocks) + 1} shard groups (each block, then embeddings, final norm and "
                      f"head) over {self.dist.world_size} ranks")
        return model

    def _set_grad_sync(self, last_micro_step: bool) -> None:
        if self.sharded:  # reduce-scatter gradients on the last micro-step only
            self.model.set_requires_gradient_sync(last_micro_step)
        else:
            self.ddp.require_backward_grad_sync = last_micro_step

    def _evaluation_interrupted(self) -> bool:
        return False if self.sharded else super()._evaluation_interrupted()

    def _whole_model(self):
        """Greedy sampling calls the root's submodules outside its forward: gather the root's own
        parameters (embeddings, head) first; each block gathers its own as it runs."""
        if not self.sharded:
            return super()._whole_model()
        model = self.model

        @contextlib.contextmanager
        def gathered():
            model.unshard()
            try:
                yield
            finally:
                model.reshard()

        return gathered()

    def _sample_due(self, step: int) -> bool:
        """Sharded: every rank generates (each forward gathers shards from all), at the moments
        rank 0 chose (its timing-based budget travels in the step's metrics gather)."""
        return self._sample_agreed if self.sharded else super()._sample_due(step)

    def _setup_data(self, state: dict | None) -> None:
        if state is not None:  # this rank's own position (check_resume_compatible checked the world size)
            state = {"data": state.get("data_ranks", [state.get("data", {})])[self.data_rank]}
        super()._setup_data(state)

    @property
    def accum_steps(self) -> int:
        return self._accum

    def _device_name(self) -> str:
        name = super()._device_name()
        return f"{self.dist.world_size} x {name} ({self.dist.backend})" if self._job_name else name

    def run(self):
        try:
            return super().run()
        finally:
            if getattr(self, "dist", None) is not None:
                self.dist.close()

    def _fail(self, exc: Exception):
        """As Trainer._fail, without the rescue checkpoint: the other ranks may be gone."""
        from .config import ConfigError
        from .data import DataError
        from .events import RunFailed
        from .checkpoint import CheckpointError
        import traceback

        log.error("training failed at step %d (rank %d)", self.step, env_rank(), exc_info=True)
        own = isinstance(exc, (DataError, ConfigError, CheckpointError))
        message = str(exc) if own else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, dist.DistError) or "gloo" in message or "NCCL" in message:
            first = (str(exc).strip().splitlines() or [""])[0][-160:]
            message = f"rank {env_rank()} lost contact with another rank at step {self.step + 1} ({first})"
        self._set_state("failed")
        return RunFailed(self.step, message, traceback.format_exc())

    # ---- step boundaries: what every rank does together ---------------------------------------------
    def _agree(self, no_data: bool = False) -> tuple[bool, bool, bool, bool]:
        return self.dist.agree(self._stop.is_set(), self.paused, self._checkpoint_now.is_set(), no_data)

    def _loop(self) -> str:
        cfg, main = self.cfg, self.dist.is_main
        while True:
            if cfg.max_chunks is not None and self.step >= cfg.max_chunks:
                return "completed"
            have = self.batches.fill(self._accum)
            stop, pause, checkpoint, no_data = self._agree(no_data=not have)
            if stop or pause or checkpoint or no_data:
                self.batches.give_back()  # the step did not happen: its batches stay unread
                if stop:
                    self.request_stop()
                    return "stopped"
                if checkpoint:
                    self._checkpoint_now.clear()
                    self.save_checkpoint()
                if no_data:
                    return "data exhausted"
                if pause:
                    self._paused_together()
                continue
            metrics = self.train_step()
            step = self.step
            if main or self.sharded:  # DDP: rank 0 alone evaluates, publishes and samples, the others wait at
                self.publish_step(metrics)  # the next agreement; FSDP: all do (ranks > 0 publish to nobody)
            if step % cfg.checkpoint_interval == 0:
                self.save_checkpoint()
            if self.bad_steps >= cfg.max_bad_steps:
                self._say(f"stopping: {self.bad_steps} steps in a row had a non-finite loss", "error")
                return "too many bad steps"

    def _paused_together(self) -> None:
        """Wait paused, agreeing every 0.1 s, so resume, stop and checkpoint reach all ranks."""
        self._set_state("paused")
        while True:
            if self.paused:
                self._running.wait(0.1)
            else:
                time.sleep(0.01)  # ranks > 0: the agreement below waits for rank 0
            stop, pause, checkpoint, _ = self._agree()
            if stop:
                self.request_stop()
                return
            if checkpoint:
                self._checkpoint_now.clear()
                self.save_checkpoint()
            if not pause:
                break
        if self.dist.is_main:
            self._running.set()
        self._set_state("running")

    def evaluate(self):
        """DDP: rank 0 only, on the bare model (DDP's forward is for training steps). FSDP: every
        rank, on the sharded model, together."""
        if self.sharded:
            return super().evaluate()
        forward, self.forward = self.forward, self._local_forward
        try:
            return super().evaluate()
        finally:
            self.forward = forward

    def train_step(self):
        """The base step (DDP averages the gradients), then the job's metrics on rank 0: loss and
        accuracy averaged over ranks, tokens/s summed, memory the largest rank's."""
        metrics = super().train_step()
        world = self.dist.world_size
        self.tokens_seen += (world - 1) * self._accum * self.cfg.tokens_per_micro_batch  # base counted this rank's
        sample = float(self.sharded and self.dist.is_main and super()._sample_due(self.step))
        rows = self.dist.gather_floats([metrics.loss, metrics.accuracy, metrics.tokens_per_sec,
                                        metrics.gpu_memory_mb, metrics.rss_mb, sample], everywhere=self.sharded)
        if self.sharded:
            self._sample_agreed = bool(rows[0][5])
        if self.dist.is_main:
            cols = list(zip(*rows))
            metrics.loss = sum(cols[0]) / world
            metrics.accuracy = sum(cols[1]) / world
            metrics.tokens_per_sec = sum(cols[2])
            metrics.gpu_memory_mb, metrics.rss_mb = max(cols[3]), max(cols[4])
            metrics.mfu = self.mfu(metrics.tokens_per_sec)
            if self.step == 1 or self.step % self.cfg.viz_interval == 0:
                log.info("step %d memory per rank (MB, GPU peak / RSS): %s", self.step,
                         ", ".join(f"r{r} {row[3]:.0f}/{row[4]:.0f}" for r, row in enumerate(rows)))
        metrics.tokens_seen = self.tokens_seen
        return metrics

    # ---- checkpoints: rank 0 writes every rank's data position ---------------------------------------
    def save_checkpoint(self, retry_delay: float = 5.0) -> str:
        from . import checkpoint as ckpt

        positions = self.dist.gather_objects(self.batches.state())
        if self.sharded:
            self._positions = positions
            return self._save_sharded(retry_delay)
        if not self.dist.is_main:
            self.last_checkpoint = str(ckpt.checkpoint_path(self.cfg.checkpoint_dir, self.step))
            return self.last_checkpoint
        self._positions = positions
        return super().save_checkpoint(retry_delay)

    def _save_sharded(self, retry_delay: float) -> str:
        """FSDP: every rank writes its own shards of the model and optimizer state with
        torch.distributed.checkpoint into checkpoint_step_XXXXXX.dcp.partial/, rank 0 adds meta.pt,
        and only when every rank succeeded does rank 0 rename the directory to its final name. A
        failure on any rank is seen by all (DCP raises everywhere; meta.pt's write is agreed): retry
        once, then every rank stops with the previous checkpoints intact."""
        import shutil

        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.api import CheckpointException
        from torch.distributed.checkpoint.state_dict import get_state_dict

        from . import checkpoint as ckpt
        from .events import CheckpointSaved
        from .files import atomic_write

        main = self.dist.is_main
        final = ckpt.checkpoint_path(self.cfg.checkpoint_dir, self.step, sharded=True)
        partial = final.with_name(final.name + ".partial")
        for attempt in (1, 2):
            error = ""
            try:
                if main:
                    shutil.rmtree(partial, ignore_errors=True)
                    partial.mkdir(parents=True)
                self.dist.barrier()
                model_state, optim_state = get_state_dict(self.model, self.optimizer)
                dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(partial))
                if main:
                    meta = {**self.checkpoint_meta(), "model": None, "sharded": "torch.distributed.checkpoint"}
                    atomic_write(partial / ckpt.META_FILE, lambda fh: torch.save(meta, fh))
            except (OSError, RuntimeError, CheckpointException) as exc:  # DCP: raised on every rank if any failed
                error = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            failed = self.dist.agree(bool(error), False, False)[0]
            if not failed:
                break
            error = error or "another rank could not write its shards"
            if main:
                shutil.rmtree(partial, ignore_errors=True)
            if attempt == 2:
                raise ckpt.CheckpointError(
                    f"cannot write checkpoint at step {self.step}: {error}; training stopped, "
                    f"last good checkpoint: {self.last_checkpoint or 'none'}")
            if main:
                self._say(f"checkpoint write failed ({error}); retrying in {retry_delay:.0f}s", "warning")
            time.sleep(retry_delay)
        if main:
            if final.exists():  # the same step saved again (a checkpoint request, then the final one)
                ckpt.remove_checkpoint(final)
            partial.rename(final)
            ckpt.prune_checkpoints(self.cfg.checkpoint_dir, self.cfg.keep_checkpoints, final)
        self.dist.barrier()  # the directory is final before any rank goes on
        self.last_checkpoint = str(final)
        if main:
            self.bus.publish(CheckpointSaved(self.step, str(final)))
        return str(final)

    def _restore_weights(self, state: dict) -> None:
        """A sharded checkpoint: each rank reads its own shards through DCP (the metadata was
        checked by load_checkpoint's safe unpickler before)."""
        if not state.get("sharded_dir"):
            return super()._restore_weights(state)
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        loaded = {"model": model_state, "optimizer": optim_state}
        dcp.load(loaded, checkpoint_id=state["sharded_dir"])
        set_state_dict(self.model, self.optimizer, model_state_dict=loaded["model"],
                       optim_state_dict=loaded["optimizer"])

    def checkpoint_meta(self) -> dict:
        state = super().checkpoint_meta()
        state["data"] = self._positions[0]
        state["data_ranks"] = self._positions
        state["world_size"] = self.dist.world_size
        return state


def make_trainer(cfg, bus=None, resume=None):
    """The Trainer for this process: data parallel under torchrun with WORLD_SIZE > 1."""
    if env_world_size() > 1:
        return DistributedTrainer(cfg, bus, resume)
    from .trainer import Trainer

    return Trainer(cfg, bus, resume)
