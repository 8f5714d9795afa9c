"""Every registered detector preset, kept with its family; importing this package registers them.

One module a family — :mod:`.fcos` (FCOS, NL-FCOS, FCOS on a registered backbone),
:mod:`.centernet`, :mod:`.retinanet`, :mod:`.cornernet` (on an hourglass), :mod:`.cornerfcos` —
and :mod:`.common` for what they share: :func:`~.common.resnet_features`,
:func:`~.common.build_neck` and :func:`~.common.preset_options`, which gives a preset its
validated options. A preset is a literal ``def`` decorated with
``@register_model(task="detection", options=preset_options(builder, Detector, Head))`` (the
README's "Extending").
"""

from hybridvision.detectors.presets import centernet, cornerfcos, cornernet, fcos, retinanet  # noqa: F401

__all__ = ["centernet", "cornerfcos", "cornernet", "fcos", "retinanet"]
