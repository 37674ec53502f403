"""Command line: parses flags onto TrainingConfig and composes trainer, writers and display."""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .config import DEFAULT_DATASET, MODEL_PRESETS, ConfigError, TrainingConfig

SUBCOMMANDS = ("render", "compare", "watch", "attach", "ls")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    return value


def _keep(text: str) -> int:
    return 0 if text == "all" else _positive_int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="neurogen-tui",
        usage="neurogen-tui [options]\n       neurogen-tui {render,compare,watch,attach,ls} ...",
        description="Train a GPT-style model on SlimPajama and watch it learn in the terminal.",
        epilog="Other commands: neurogen-tui {render,compare,watch,attach,ls} --help",
        argument_default=None)
    p.add_argument("--version", action="version", version=f"neurogen-tui {__version__}")
    g = p.add_argument_group("run")
    g.add_argument("--test", action="store_true", default=None,
                   help="quick check: 5 chunks on the bundled sample, tiny model, visualization every 2 steps")
    g.add_argument("--run-dir", help="directory for training_viz/ and checkpoints/ (default: .)")
    g.add_argument("--run-name", help="name shown in the app and dashboards (default: run dir's name)")
    g.add_argument("--resume", metavar="PATH|latest", help="continue from a checkpoint")
    g.add_argument("--overwrite", action="store_true", default=None,
                   help="start a fresh run in a run dir that already holds one")
    g.add_argument("--headless", action="store_true", default=None,
                   help="no app: a progress bar and summary lines (automatic when stdout is not a terminal)")
    g.add_argument("--in-process", action=argparse.BooleanOptionalAction, default=None,
                   help="with the app: train on a thread of the app's process, or (--no-in-process) in a "
                        "child process that shares no GIL with the screen (default: a child on a GPU; this "
                        "process on a CPU, where the screen's own process would take cores from training: "
                        "benchmarks/results/ui.md)")
    g.add_argument("--on-hangup", choices=("continue", "stop"),
                   help="when the terminal goes away (SSH dropped): keep training headless, its output "
                        "going to the run's log, or stop with a final checkpoint (default: continue)")
    g.add_argument("--device", help="auto (cuda, then mps, then cpu), cpu, cuda[:N] or mps")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    g.add_argument("--seed", type=int, help="random seed (runs are deterministic on CPU)")
    g.add_argument("--nproc-per-node", type=int, metavar="N",
                   help="train on N processes of this machine (one per GPU; gloo on CPU), data parallel, "
                        "started through torchrun (default: 1, in this process)")
    g.add_argument("--strategy", choices=("ddp", "fsdp"),
                   help="with several ranks: ddp keeps a whole model on each (DistributedDataParallel); fsdp "
                        "shards parameters, gradients and optimizer state across them (FSDP2 fully_shard) "
                        "and checkpoints with torch.distributed.checkpoint (default: ddp)")
    g.add_argument("--peak-tflops", type=float, metavar="T",
                   help="peak dense bf16 TFLOP/s of one GPU, for MFU (default: from a table of known GPUs)")

    g = p.add_argument_group("data")
    g.add_argument("--dataset", help=f"hub dataset with a text column, a local path, or 'sample' "
                                     f"(default: {DEFAULT_DATASET})")
    g.add_argument("--data-files", metavar="GLOB", help="local shards (*.jsonl.zst, .jsonl, .json.gz, .parquet, .txt)")
    g.add_argument("--val-data-files", metavar="GLOB", help="local validation shards")
    g.add_argument("--tokenizer", metavar="PATH", help="tokenizer.json or SentencePiece .model (default: bytes)")
    g.add_argument("--epochs", type=int, help="passes over a finite dataset, 0 loops forever (default: 1)")

    g = p.add_argument_group("model")
    g.add_argument("--model", choices=list(MODEL_PRESETS), help="preset size; flags below override it (default: small)")
    g.add_argument("--n-layer", type=int)
    g.add_argument("--n-head", type=int)
    g.add_argument("--n-embd", type=int)
    g.add_argument("--seq-len", type=int, help="context length in tokens")
    g.add_argument("--dropout", type=float)

    g = p.add_argument_group("optimisation")
    g.add_argument("--max-chunks", type=int, help="optimizer steps to train (default: until stopped or data ends)")
    g.add_argument("--tokens-per-chunk", type=int, help="tokens per optimizer step (default: 4096)")
    g.add_argument("--batch-size", type=int, help="sequences per micro-batch; the rest is gradient accumulation")
    g.add_argument("--lr", type=float, help="peak learning rate (default: 1e-3)")
    g.add_argument("--min-lr", type=float, help="final learning rate of the cosine decay (default: 1e-4)")
    g.add_argument("--warmup-steps", type=int, help="linear warmup steps (default: 100)")
    g.add_argument("--lr-decay-steps", type=int, help="cosine decay length (default: --max-chunks)")
    g.add_argument("--weight-decay", type=float, help="AdamW decoupled weight decay (default: 0.1)")
    g.add_argument("--grad-clip", type=float, help="gradient norm clip, 0 disables (default: 1.0)")
    g.add_argument("--max-bad-steps", type=int, help="stop after this many non-finite steps in a row (default: 10)")

    g = p.add_argument_group("monitoring")
    g.add_argument("--viz-interval", type=int, help="dashboard every N steps (default: 50)")
    g.add_argument("--viz-budget", type=float, metavar="F",
                   help="when every core is busy training, periodic dashboards wait so that drawing takes at most "
                        "this share of training time (default: 0.005; 0: every --viz-interval steps whatever it costs)")
    g.add_argument("--checkpoint-interval", type=int, help="checkpoint every N steps (default: 2000)")
    g.add_argument("--keep-checkpoints", type=_keep, metavar="K|all", help="newest checkpoints kept (default: 3)")
    g.add_argument("--keep-dashboards", type=_keep, metavar="K|all", help="training_step_*.png kept (default: 20)")
    g.add_argument("--eval-interval", type=int, help="validation every N steps (default: 250)")
    g.add_argument("--eval-iters", type=int, help="validation batches per evaluation (default: 10)")
    g.add_argument("--sample-interval", type=int, help="text sample every N steps (default: 5; see --sample-budget)")
    g.add_argument("--sample-budget", type=float,
                   help="largest share of training time text samples may cost; they are spaced out to "
                        "stay under it, 0 disables (default: 0.005)")
    g.add_argument("--sample-tokens", type=int, help="length of a sample's continuation (default: 48)")
    g.add_argument("--display-samples", type=int, help="samples in the dashboard table (default: 5)")
    g.add_argument("--ui-budget", type=float, metavar="F",
                   help="the app's screen (charts, samples, header) uses at most this share of the time while that "
                        "costs training: with the trainer in the app's process, or every core busy; keys never "
                        "wait (default: 0.01; 0: full rate whatever it costs)")
    return p


def config_from_args(args: argparse.Namespace, base: TrainingConfig | None = None) -> TrainingConfig:
    """Flags given on the command line override `base` (a resumed run's config) or the defaults."""
    cfg = base or TrainingConfig()
    given = {k: v for k, v in vars(args).items() if v is not None and k != "overwrite"}
    if given.pop("test", None):
        cfg.apply_test_mode()
    if "model" in given:
        cfg.apply_preset(given.pop("model"))
    for key, value in given.items():
        if hasattr(cfg, key):
            setattr(cfg, key, value)
    return cfg


def trains_in_process(cfg: TrainingConfig) -> bool:
    """Whether the app keeps the trainer on a thread of its own process. Measured on a 2-core CPU
    box: beside a trainer whose torch threads fill every core, a separate screen process slowed it
    more (its CPU delays one thread and the others wait at each op's barrier) than sharing the GIL
    did; on a GPU the trainer is one Python thread launching kernels, and a screen holding its GIL
    would stall them, so there it is a child."""
    if cfg.in_process is not None:
        return cfg.in_process
    from .trainer import pick_device

    try:
        return pick_device(cfg.device).type == "cpu"
    except ConfigError:  # the trainer says so, in one line, on the in-process road
        return True


def fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"neurogen-tui: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        from .commands import run_subcommand

        return run_subcommand(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    from .run import prepare_run, start

    try:
        cfg, resume, lock = prepare_run(args)
    except (ConfigError, OSError) as exc:
        return fail(str(exc))
    try:
        from .distributed import under_launcher

        headless = bool(args.headless) or not sys.stdout.isatty()
        if not under_launcher() and (cfg.nproc_per_node > 1 or not (headless or trains_in_process(cfg))):
            from .launch import launch  # the trainer (N ranks through torchrun, or one) as children

            return launch(argv, cfg, headless)
        return start(cfg, resume, headless)
    finally:
        lock.release()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
