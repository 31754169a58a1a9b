"""The detectors: LaDeDa (5/9/17/33), Tiny-LaDeDa and their fixed input filters."""

from ladeda.models.filters import PREPROCESS_NAMES, InputFilter, npr
from ladeda.models.ladeda import LaDeDa, LaDeDa5, LaDeDa9, LaDeDa17, LaDeDa33
from ladeda.models.tiny import TinyLaDeDa

ARCHS = {cls.__name__: cls for cls in (LaDeDa5, LaDeDa9, LaDeDa17, LaDeDa33, TinyLaDeDa)}


def build_model(arch: str, preprocess: str | None = None, npr_scale: float = 1.0, width: int | None = None):
    """Build a model by class name (`LaDeDa9`, `TinyLaDeDa`, ...); None keeps each class's default."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    kwargs: dict = {"npr_scale": npr_scale}
    if preprocess is not None:
        kwargs["preprocess"] = preprocess
    if arch != "TinyLaDeDa" and width is not None:
        kwargs["width"] = width
    return ARCHS[arch](**kwargs)


def arch_name(model) -> str:
    """The class name a checkpoint records for `model` (one of ARCHS)."""
    return type(model).__name__


__all__ = ["ARCHS", "PREPROCESS_NAMES", "InputFilter", "LaDeDa", "LaDeDa5", "LaDeDa9", "LaDeDa17",
           "LaDeDa33", "TinyLaDeDa", "arch_name", "build_model", "npr"]
