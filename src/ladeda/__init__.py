"""ladeda: LaDeDa / Tiny-LaDeDa patch detectors of AI-generated images, trained and distilled under DVC."""

__version__ = "0.1.0"
