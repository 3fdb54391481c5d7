"""CUDA-graph replay of whole training iterations and of env steps.

A captured region must be all GPU work with fixed shapes and addresses: the envs step
branch-free and the algorithms never read a device value (SAC and TD3 once they learn),
so one iteration (PPO: T env steps, T policy calls, GAE and every minibatch update;
SAC/TD3: env steps, replay inserts and every gradient step) is one graph; across ranks
the graph holds the NCCL collectives too (algos.distributed). Tensors that
the region *replaces* (the env's state, the next observation) are copied back into the
region's inputs at its end, so each replay continues from the last. Random numbers come
from the run's own generators, registered with the graph so every replay draws fresh ones.

An env that torch cannot capture (MJX steps on JAX) keeps its collection eager; the update
alone, an algorithm's kernel-heavy part, is then one graph (`Updates`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from algos.base import Algorithm
from algos.distributed import world_size
from envs.base import VecEnv

Region = Callable[[torch.Tensor], tuple[torch.Tensor, Any]]


def capture(fn: Callable[[], Any], generators: list[torch.Generator]) -> tuple[Any, Any]:
    """``fn()`` captured as a CUDA graph drawing from ``generators``: (graph, its outputs)."""
    graph = torch.cuda.CUDAGraph()
    for g in generators:
        graph.register_generator_state(g)
    if world_size() > 1:
        torch.cuda.synchronize()  # no collective of an earlier iteration still in flight
    # Thread-local: only this thread's CUDA calls can break the capture. Other threads make
    # their own: NCCL's watchdog queries the events of collectives, and JAX's runtime (the
    # MJX envs) runs its own. In global mode a capture of cartpole members right after a
    # quadruped batch in the same process failed once on an H200 (a rerun passed).
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        outputs = fn()
    return graph, outputs


class GraphedRegion:
    """``region(obs) -> (next obs, outputs)`` captured once from ``obs``, then replayed.

    Warm the region up with a few eager calls first, inside `side_stream` (lazy set-up of
    cuBLAS, autograd and optimizer state must not happen during a capture).
    """

    def __init__(
        self, region: Region, env: VecEnv, generators: list[torch.Generator], obs: torch.Tensor
    ) -> None:
        tensors = env.tensors()
        self.inputs = inputs = {k: v.clone() for k, v in tensors.items()}
        # An observation that is the env's state (the fused cartpole's) is that input itself:
        # one copy back per replay instead of two (about half the bytes the copies moved).
        shared = next((k for k, v in tensors.items() if v is obs), None)
        self.obs = inputs[shared] if shared is not None else obs.clone()
        env.load_tensors(inputs)

        def captured() -> Any:
            next_obs, outputs = region(self.obs)
            # The region's own final tensors: every replay writes them. One made before the
            # capture (the fused env's spare random counter after an odd number of steps)
            # would otherwise be freed below and written into by replays after its reuse.
            self.written = env.tensors()
            if shared is None:
                self.obs.copy_(next_obs)
            elif next_obs is not self.written[shared]:
                raise RuntimeError(f"the region's observation is no longer the env's {shared}")
            for name, value in self.written.items():
                if value is not inputs[name]:
                    inputs[name].copy_(value)
            return outputs

        self.graph, self.outputs = capture(captured, generators)
        env.load_tensors(inputs)  # capture ran nothing: the inputs still hold the state

    def __call__(self) -> tuple[torch.Tensor, Any]:
        """One replay: the next observation and the region's outputs (static tensors that
        the next replay overwrites)."""
        self.graph.replay()
        return self.obs, self.outputs

    def adopt(self, env: VecEnv, obs: torch.Tensor) -> torch.Tensor:
        """Go on from the state that eager code left in ``env`` (a reset, iterations run
        outside the graph) and from ``obs``: copied into the region's inputs."""
        for name, value in env.tensors().items():
            if value is not self.inputs[name]:
                self.inputs[name].copy_(value)
        env.load_tensors(self.inputs)
        self.obs.copy_(obs)
        return self.obs


GRAPH_WARMUP = 2  # eager iterations before a training iteration is captured


class Iterations:
    """Training iterations ``region(obs) -> (next obs, outputs)``: eager, or with
    ``use_graph`` GRAPH_WARMUP eager ones on a side stream, then one capture, then replays.

    With ``algo``, iterations stay eager until its `capture_ready`, its host counters are
    put back after the capture and advanced after every replay (algos.base.Algorithm).
    """

    def __init__(
        self,
        region: Region,
        env: VecEnv,
        generators: list[torch.Generator],
        device: torch.device,
        use_graph: bool,
        algo: Algorithm | None = None,
    ) -> None:
        self.region, self.env, self.generators = region, env, generators
        self.device, self.use_graph, self.algo = device, use_graph, algo
        self.graph: GraphedRegion | None = None
        self.warmup = 0  # eager iterations run so far toward the capture
        self.stale = False  # eager code moved the env or obs since the last replay
        self.replays = 0  # graph replays so far

    def __call__(self, obs: torch.Tensor) -> tuple[torch.Tensor, Any]:
        ready = self.algo is None or self.algo.capture_ready
        if self.graph is not None and ready:
            if self.stale:
                self.graph.adopt(self.env, obs)
                self.stale = False
            out = self.graph()
            self.replays += 1
            if self.algo is not None:
                self.algo.replayed()
            return out
        if self.graph is not None:  # a reused graph's algorithm acts at random first
            self.stale = True
            return self.region(obs)
        if not self.use_graph or not ready:
            return self.region(obs)
        with side_stream(self.device):
            obs, stats = self.region(obs)
            stats = {k: v.clone() for k, v in stats.items()}
        self.warmup += 1
        if self.warmup == GRAPH_WARMUP:
            counters = self.algo.host_state() if self.algo is not None else {}
            self.graph = GraphedRegion(self.region, self.env, self.generators, obs)
            if self.algo is not None:
                self.algo.load_host_state(counters)
            obs = self.graph.obs
        return obs, stats

    def release(self) -> None:
        """Free the captured graph (iterations after this run eagerly). A graph that holds
        NCCL collectives must go before its process group, or destroying the group hangs
        (pytorch/pytorch#115388)."""
        if self.graph is not None:
            torch.cuda.synchronize(self.device)
            self.graph.graph.reset()
            self.graph = None
        self.use_graph = False


class Updates:
    """``algo.update()`` for an env whose steps torch cannot capture: eager, or with
    ``use_graph`` GRAPH_WARMUP eager updates on a side stream, then one capture and a replay
    per iteration while collection (env steps, act, observe) stays eager. The algorithm keeps
    the tensors its update reads at fixed addresses; `update_replayed` advances its host
    counters after each replay. Eager draws and replays share the registered generators:
    each replay starts from the offset the eager draws left."""

    def __init__(
        self,
        algo: Algorithm,
        generators: list[torch.Generator],
        device: torch.device,
        use_graph: bool,
    ) -> None:
        self.algo, self.generators, self.device = algo, generators, device
        self.use_graph = use_graph
        self.graph: Any = None
        self.outputs: dict[str, torch.Tensor] = {}
        self.warmup = 0
        self.replays = 0

    def __call__(self) -> dict[str, torch.Tensor]:
        if not self.use_graph or not self.algo.capture_ready:
            return self.algo.update()
        if self.graph is None and self.warmup < GRAPH_WARMUP:
            with side_stream(self.device):
                stats = {k: v.clone() for k, v in self.algo.update().items()}
            self.warmup += 1
            return stats
        if self.graph is None:  # the capture runs nothing: this update is its first replay
            counters = self.algo.host_state()
            self.graph, self.outputs = capture(self.algo.update, self.generators)
            self.algo.load_host_state(counters)
        self.graph.replay()
        self.replays += 1
        self.algo.update_replayed()
        return self.outputs

    def release(self) -> None:
        """Free the captured graph (updates after this run eagerly)."""
        if self.graph is not None:
            torch.cuda.synchronize(self.device)
            self.graph.reset()
            self.graph = None
        self.use_graph = False


class side_stream:  # noqa: N801 - used as a context manager, like torch.cuda.stream
    """Run the block on a fresh side stream, ordered after and before the current one."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self.inner = torch.cuda.stream(self.stream)

    def __enter__(self) -> None:
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        self.inner.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.inner.__exit__(*exc)
        torch.cuda.current_stream(self.device).wait_stream(self.stream)


def refill(old: Any, new: Any) -> None:
    """Give ``old`` the state of ``new``, an object built the same way for other runs (same
    shapes): tensors are copied in place, so a CUDA graph captured on ``old`` reads the new
    values; dicts, lists, tuples and the project's own objects are walked; anything else
    (numbers, configs, generators) is taken over. A tensor ``old`` reaches by two paths is
    copied from the first one."""
    _refill(old, new, set())


def _refill(old: Any, new: Any, seen: set[int]) -> Any:
    if isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor):
        if old.shape != new.shape or old.dtype != new.dtype:
            raise ValueError(
                f"cannot refill a {old.shape} {old.dtype} tensor with a {new.shape} {new.dtype} one"
            )
        # A tensor that two attributes share (the fused env's spare random counter, after an
        # odd number of steps, is the counter) takes the first value that reaches it.
        if old is not new and id(old) not in seen:
            seen.add(id(old))
            with torch.no_grad():
                old.copy_(new)
        return old
    if id(old) in seen:
        return old
    seen.add(id(old))
    if isinstance(old, dict) and isinstance(new, dict) and old.keys() == new.keys():
        for key in old:
            old[key] = _refill(old[key], new[key], seen)
        return old
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        old[:] = [_refill(a, b, seen) for a, b in zip(old, new, strict=True)]
        return old
    if isinstance(old, tuple) and isinstance(new, tuple) and len(old) == len(new):
        return tuple(_refill(a, b, seen) for a, b in zip(old, new, strict=True))
    own = type(old).__module__.split(".")[0] in _OWN
    # Modules (layer templates) and configs (frozen dataclasses) are taken over whole.
    if own and type(old) is type(new) and not _taken_whole(old):
        for name, value in vars(new).items():
            setattr(old, name, _refill(getattr(old, name, None), value, seen))
        return old
    return new


_OWN = {"algos", "envs", "harness"}  # packages whose objects `refill` walks into


def _taken_whole(obj: Any) -> bool:
    return isinstance(obj, torch.nn.Module) or dataclasses.is_dataclass(obj)
