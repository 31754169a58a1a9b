"""Evaluation: scoring a model over a split, detection metrics, efficiency and the Markdown report."""
