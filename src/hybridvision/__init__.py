"""hybridvision: does self-attention help convolutional vision models, and at what cost?

Public API::

    import hybridvision as hv
    hv.list_models("nl_fcos*")
    model = hv.create_model("fcos_r50_fpn", num_classes=80)
    summary = hv.train(hv.TrainConfig(model="fcos_demo", data="builtin:amounts", epochs=2))
    evaluation = hv.evaluate_run(run="runs/train")
    hv.predict("images/", weights="runs/train/checkpoints/best.safetensors", out="preds")
"""

from hybridvision import interrupts as _interrupts

# Ctrl-C in the seconds the `hybridvision` command spends importing is held until `cli.main`
# starts, which then ends the command as an interrupted one: `interrupted`, exit code 130, no
# traceback (hybridvision.interrupts). Imported by a program of the user's, nothing changes.
if _interrupts.is_command():
    _interrupts.hold()

from hybridvision.api import evaluate_files, evaluate_run, load_trained, predict  # noqa: E402
from hybridvision.config import TrainConfig  # noqa: E402
from hybridvision.engine.trainer import train  # noqa: E402
from hybridvision.errors import DataError, UserInputError  # noqa: E402
from hybridvision.layers.registry import create_attn, list_attn  # noqa: E402
from hybridvision.factory import create_model, list_models  # noqa: E402
from hybridvision.registry import register_model  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "create_model", "list_models", "register_model", "create_attn", "list_attn", "train",
    "TrainConfig", "evaluate_run", "evaluate_files", "predict", "load_trained",
    "UserInputError", "DataError", "__version__",
]
