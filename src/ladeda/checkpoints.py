"""Public entry point for checkpoints (`from ladeda.checkpoints import load_model`); they live in `ladeda.models`."""

from ladeda.models.checkpoints import load_model, read_checkpoint, save_checkpoint

__all__ = ["load_model", "read_checkpoint", "save_checkpoint"]
