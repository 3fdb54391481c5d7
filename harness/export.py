"""A run's greedy policy as a file that runs without vecbench: ONNX (``.onnx``, for
onnxruntime, TensorRT, ...), TorchScript (``.pt``, ``torch.jit.load``; deprecated by torch)
or torch.export (``.pt2``, ``torch.export.load(path).module()``).

The exported program maps observations ``obs`` [B, O] float32 to the actions the task
applies, ``actions``: [B] int64 for discrete tasks, [B, A] float32 clipped to the action
space for continuous ones. It includes the observation normalisation, with the statistics
of the checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import warnings
from pathlib import Path

import torch

from algos.base import Algorithm
from envs.base import ActionSpace
from harness.errors import VecbenchError
from harness.files import write_error
from harness.registry import make_algo, make_env
from harness.tracking import RunStore

FORMATS = {".onnx": "ONNX", ".pt": "TorchScript", ".pt2": "torch.export"}


BATCH = ({0: torch.export.Dim("batch")},)  # any number of observations


class GreedyPolicy(torch.nn.Module):
    """obs [B, O] -> the actions the task applies (see the module docstring)."""

    def __init__(self, algo: Algorithm, action_space: ActionSpace) -> None:
        super().__init__()
        self.algo = algo
        self.space = action_space

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        actions = self.algo.policy(obs, deterministic=True)
        if self.space.kind == "continuous":
            actions = actions.clamp(self.space.low, self.space.high)
        return actions


def load_policy(run_dir: Path) -> tuple[GreedyPolicy, int]:
    """The greedy policy of a run's checkpoint, on the CPU, and its observation size."""
    store = RunStore.open(Path(run_dir))
    config = store.config()
    cpu = torch.device("cpu")
    env = make_env(dataclasses.replace(config.env, num_envs=1), cpu, torch.Generator())
    algo = make_algo(config.algo, env, cpu, torch.Generator())
    store.load_algo(algo, store.load_checkpoint(cpu))
    for value in vars(algo).values():  # weights become constants of the exported program
        if isinstance(value, torch.nn.Module):
            value.requires_grad_(False)
    return GreedyPolicy(algo, env.action_space).eval(), env.observation_size


def export_policy(run_dir: Path, output: Path) -> str:
    """Write the run's greedy policy to ``output``; its format from the suffix. Returns
    the format's name."""
    output = Path(output)
    kind = FORMATS.get(output.suffix)
    if kind is None:
        raise VecbenchError(
            f"{output}: give a .onnx (ONNX), .pt (TorchScript) or .pt2 (torch.export) file name"
        )
    if output.is_dir():
        raise VecbenchError(f"{output}: -o names a directory; give a file name")
    policy, obs_size = load_policy(run_dir)
    example = torch.zeros(2, obs_size)
    # The temporary file keeps the suffix: torch.export.save warns about any other.
    tmp = output.with_name(f"{output.stem}.tmp{output.suffix}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(output, err, "write the exported policy") from None
    try:
        with torch.no_grad():
            if kind == "ONNX":
                _onnx(policy, example, tmp)
            elif kind == "torch.export":
                program = torch.export.export(policy, (example,), dynamic_shapes=BATCH)
                torch.export.save(program, str(tmp))
            else:
                torch.jit.trace(policy, example).save(str(tmp))
        os.replace(tmp, output)
    except OSError as err:  # named by the file asked for, not the temporary one
        raise write_error(output, err, "write the exported policy") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return kind


def _onnx(policy: GreedyPolicy, example: torch.Tensor, path: Path) -> None:
    try:
        import onnx  # noqa: F401 - torch.onnx needs both, and says so less clearly
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise VecbenchError(
            f"ONNX export needs the onnx and onnxscript packages: pip install onnx onnxscript "
            f"(or pip install -e '.[export]') ({err})"
        ) from None
    # The exporter and its optimiser log each pass they run; the CLI prints one line.
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                policy,
                (example,),
                str(path),
                dynamo=True,
                input_names=["obs"],
                output_names=["actions"],
                dynamic_shapes=BATCH,
                verbose=False,
                external_data=False,  # one file: the weights inside the model
            )
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
