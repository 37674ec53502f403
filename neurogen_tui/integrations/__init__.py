"""Adapters that put other frameworks' training loops on our screen, steerable: Hugging Face's
Trainer (hf.py), Lightning (lightning.py), and a torchtitan-shaped `log(metrics, step)` / `close()`
backend (torchtitan.py). Each imports its framework only when used: optional extras."""
