"""CUDA-graph replay of whole training iterations and of env steps.

A captured region must be all GPU work with fixed shapes and addresses: the envs step
branch-free and the algorithms never read a device value (SAC and TD3 once they learn),
so one iteration (PPO: T env steps, T policy calls, GAE and every minibatch update;
SAC/TD3: env steps, replay inserts and every gradient step) is one graph; across ranks
the graph holds the NCCL collectives too (algos.distributed). Tensors that
the region *replaces* (the env's state, the next observation) are copied back into the
region's inputs at its end, so each replay continues from the last. Random numbers come
from the run's own generators, registered with the graph so every replay draws fresh ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from algos.base import Algorithm
from algos.distributed import world_size
from envs.base import VecEnv

Region = Callable[[torch.Tensor], tuple[torch.Tensor, Any]]


class GraphedRegion:
    """``region(obs) -> (next obs, outputs)`` captured once from ``obs``, then replayed.

    Warm the region up with a few eager calls first, inside `side_stream` (lazy set-up of
    cuBLAS, autograd and optimizer state must not happen during a capture).
    """

    def __init__(
        self, region: Region, env: VecEnv, generators: list[torch.Generator], obs: torch.Tensor
    ) -> None:
        self.obs = obs.clone()
        inputs = {k: v.clone() for k, v in env.tensors().items()}
        env.load_tensors(inputs)
        self.graph = torch.cuda.CUDAGraph()
        for g in generators:
            self.graph.register_generator_state(g)
        mode = "global"
        if world_size() > 1:
            # NCCL's watchdog thread queries the events of earlier collectives: let it during
            # this capture (thread-local mode), with nothing of theirs still in flight.
            torch.cuda.synchronize()
            mode = "thread_local"
        with torch.cuda.graph(self.graph, capture_error_mode=mode):
            next_obs, self.outputs = region(self.obs)
            self.obs.copy_(next_obs)
            # The region's own final tensors: every replay writes them. One made before the
            # capture (the fused env's spare random counter after an odd number of steps)
            # would otherwise be freed below and written into by replays after its reuse.
            self.written = env.tensors()
            for name, value in self.written.items():
                if value is not inputs[name]:
                    inputs[name].copy_(value)
        env.load_tensors(inputs)  # capture ran nothing: the inputs still hold the state

    def __call__(self) -> tuple[torch.Tensor, Any]:
        """One replay: the next observation and the region's outputs (static tensors that
        the next replay overwrites)."""
        self.graph.replay()
        return self.obs, self.outputs


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

    def __call__(self, obs: torch.Tensor) -> tuple[torch.Tensor, Any]:
        if self.graph is not None:
            out = self.graph()
            if self.algo is not None:
                self.algo.replayed()
            return out
        if not self.use_graph or (self.algo is not None and not self.algo.capture_ready):
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
