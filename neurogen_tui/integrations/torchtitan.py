"""A metrics backend of the shape torchtitan's metrics logger uses (`log(metrics, step)`,
`close()`), for a loop that already logs through one: its run shows on our screen, and
`should_stop` / `run` give it the steering.

    from neurogen_tui.integrations.torchtitan import NeurogenBackend
    backend = NeurogenBackend(project="titan", config=job_config_dict)
    backend.log({"loss_metrics/global_avg_loss": loss, "wps": wps}, step)
    ...
    backend.close()
"""
from __future__ import annotations

from .. import init


class NeurogenBackend:
    def __init__(self, run_dir=None, project=None, name=None, config: dict | None = None, **init_kwargs):
        self.run = init(run_dir=run_dir, project=project, name=name, config=config, **init_kwargs)

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    @property
    def should_stop(self) -> bool:
        return self.run.should_stop

    def close(self) -> None:
        self.run.finish()
