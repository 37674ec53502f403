"""The logging API: any training loop writes a run directory, and takes steering, as our trainer's
does (run.py: the run; writer.py: its files, off the loop's thread; steer.py: what attach and ctl
ask of it). Beside the trainer, never below it; neurogen_tui/__init__.py composes it with the
control server and offers it as `neurogen_tui.init/log/finish`."""
