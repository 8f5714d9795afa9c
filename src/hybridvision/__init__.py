"""hybridvision: does self-attention help convolutional vision models, and at what cost?

Public API::

    import hybridvision as hv
    hv.list_models("nl_fcos*")
    model = hv.create_model("fcos_r50_fpn", num_classes=80)
    summary = hv.train(hv.TrainConfig(model="fcos_demo", data="builtin:amounts", epochs=2))
    evaluation = hv.evaluate_run(run="runs/train")
    hv.predict("images/", weights="runs/train/checkpoints/best.safetensors", out="preds")
"""

import os as _os
import signal as _signal
import sys as _sys
import threading as _threading

# Ctrl-C in the seconds the `hybridvision` command spends importing torch is held until the
# imports end (an interrupt inside torch's native start-up aborts the process), then ends the
# command as cli.main ends an interrupted one: a message and exit code 130, no traceback.
# Imported by a program of the user's, nothing changes.
_held: list[int] = []
_cli = (_os.path.basename(_sys.argv[0] if _sys.argv else "") in ("hybridvision", "hybridvision.exe")
        and _threading.current_thread() is _threading.main_thread()
        and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler)  # not when Ctrl-C is ignored
_previous = _signal.signal(_signal.SIGINT, lambda *_: _held.append(1)) if _cli else None
try:
    from hybridvision.api import evaluate_files, evaluate_run, load_trained, predict
    from hybridvision.config import TrainConfig
    from hybridvision.engine.trainer import train
    from hybridvision.errors import DataError, UserInputError
    from hybridvision.layers.registry import create_attn, list_attn
    from hybridvision.factory import create_model, list_models
    from hybridvision.registry import register_model
finally:
    if _cli:
        _signal.signal(_signal.SIGINT, _previous)
if _held:
    _sys.stderr.write("interrupted\n")
    raise SystemExit(130)

__version__ = "0.1.0"

__all__ = [
    "create_model", "list_models", "register_model", "create_attn", "list_attn", "train",
    "TrainConfig", "evaluate_run", "evaluate_files", "predict", "load_trained",
    "UserInputError", "DataError", "__version__",
]
