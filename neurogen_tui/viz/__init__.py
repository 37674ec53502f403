"""Pictures and exports of a run: the seven-panel dashboard figure, the process that draws it, the
training side that asks for it, metrics_history.json, and TensorBoard/CSV/Parquet."""
