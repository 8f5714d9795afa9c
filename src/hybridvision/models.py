"""Imports every module that registers models, so the registry is complete once imported."""

import hybridvision.backbones.hybrid  # noqa: F401  ResNet26, SAN10, PureNL, HIB (classification)
import hybridvision.detectors.zoo  # noqa: F401  FCOS and NL-FCOS presets, FCOS on other backbones
import hybridvision.retrieval.two_branch  # noqa: F401  two-branch SBIR presets (task "sbir")
