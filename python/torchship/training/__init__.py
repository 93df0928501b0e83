"""Training: recipes (one per book procedure), metrics, checkpoints."""
