"""Imports every module that registers models, so the registry is complete once imported."""

import importlib

# Each entry is imported if present; modules are added as the toolkit grows.
_MODEL_MODULES = (
    "hybridvision.detectors.fcos",
    "hybridvision.backbones.hybrid",
    "hybridvision.detectors.zoo",
)

for _mod in _MODEL_MODULES:
    try:
        importlib.import_module(_mod)
    except ModuleNotFoundError as e:  # a module not written yet; any other import error surfaces
        if e.name != _mod:
            raise
