"""The training loop, its optimizer and schedule, checkpoints and progress reporting."""
