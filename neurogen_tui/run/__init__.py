"""The run directory, the contract between writers and readers of a run (docs/run-files.md): its
layout, states and exit codes, atomic files and JSONL, run.json, the metrics record and its
columnar sidecar, the timeline, and runs read back. Every writer and every reader goes through here."""
