"""The trainer: one training loop (trainer.py) and what it needs: its config and flags, the model,
tokenizer, data and batches, the device and parallelism, checkpoints, evaluation and samples, live
settings and the guard. Knows nothing of terminals; says everything as events on its bus."""
