"""Imports every module that registers models, so the registry is complete once imported."""

import hybridvision.backbones.hybrid  # noqa: F401  ResNet26, SAN10, PureNL, HIB (classification)
import hybridvision.detectors.presets  # noqa: F401  every detector preset, one module a family
import hybridvision.retrieval.two_branch  # noqa: F401  two-branch SBIR presets (task "sbir")
