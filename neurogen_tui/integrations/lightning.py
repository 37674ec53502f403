"""Lightning: a Logger that writes a LightningModule's run to a neurogen-tui run directory, and a
Callback that lets `attach` and `ctl` steer it.

    from neurogen_tui.integrations.lightning import NeurogenCallback, NeurogenLogger
    logger = NeurogenLogger(project="lit")
    trainer = L.Trainer(logger=logger, callbacks=[NeurogenCallback(logger)])

The logger: `log_metrics` (the names `self.log` gave: train_loss, val_loss, ...), `log_hyperparams`
(config.json), `finalize` (the run's end). The callback, at each training batch's end: a pause waits
there; stop sets `trainer.should_stop`; a checkpoint is `trainer.save_checkpoint` into the run's
checkpoints/; `set lr=` / `weight_decay=` change the first optimizer's groups. Rank 0 only.
"""
from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from .. import init


class NeurogenLogger(Logger):
    def __init__(self, run_dir=None, project=None, name=None, config: dict | None = None, **init_kwargs):
        super().__init__()
        self.kwargs = {"run_dir": run_dir, "project": project, "name": name, **init_kwargs}  # notify=..., stall_after=...
        self._config = dict(config or {})
        self._run = None

    @property
    def name(self) -> str:
        return self.kwargs["name"] or "neurogen-tui"

    @property
    def version(self) -> str:
        return str(self.experiment.dir.name) if self._run is not None else "0"

    @property
    @rank_zero_only
    def experiment(self):
        """The neurogen-tui run (made on first use, on rank 0)."""
        if self._run is None:
            self._run = init(config=self._config, **self.kwargs)
        return self._run

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        params = vars(params) if hasattr(params, "__dict__") and not isinstance(params, dict) else dict(params or {})
        self.experiment.config.update({k: v for k, v in params.items() if isinstance(v, (int, float, str, bool, dict))})

    @rank_zero_only
    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.experiment.log(dict(metrics), step=step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._run is not None:
            self._run.finish(0 if status in ("success", "finished") else 1)


class NeurogenCallback(Callback):
    def __init__(self, logger: NeurogenLogger):
        self.logger = logger
        self._trainer = None

    @rank_zero_only
    def on_train_start(self, trainer, pl_module) -> None:
        run = self.logger.experiment
        self._trainer = trainer
        if trainer.optimizers:
            run.steer_optimizer(trainer.optimizers[0])
        run.on_checkpoint(self._save)

    def _save(self) -> str:
        trainer = self._trainer
        path = Path(self.logger.experiment.dir) / "checkpoints" / f"step={trainer.global_step}.ckpt"
        trainer.save_checkpoint(path)
        return str(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        run = self.logger._run
        if run is None:
            return
        if run.control.waiting:
            run.control.boundary(trainer.global_step)
        if run.should_stop:
            trainer.should_stop = True
