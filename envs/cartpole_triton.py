"""One Triton kernel per cartpole step on CUDA: physics, termination, time limit, auto-reset
with `CounterRandom` draws, randomised parameters and episode statistics, in one pass.

It computes what `TensorTask.step` computes for `Cartpole` (the gpu tests compare the two) and
moves as few bytes per env as it can: it reads the previous observation (which is the
state), the action, the step counter (int16 when the time limit allows) and, with
randomisation, the parameters; it writes the observation, terminated, truncated and the
counter. The reward (always 1) is a view of one constant, and ``final_obs`` is assembled
when first read (`StepInfo`): with every parameter nominal `_cartpole_final` steps the
ended envs' physics again from the state and actions the step read; with randomised
parameters (redrawn in place on reset) the step stores the rows of ended episodes. The
random counter lives in two device scalars used in turn, so no program reads a value
another is writing. Triton's CPU interpreter runs the kernel too (TRITON_INTERPRET=1),
with plain tile loads and stores where the GPU runs inline PTX (`_load_rows`).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from envs.base import EnvStep, StepInfo
from envs.cartpole import FORCE_MAG, RESET_BOUND, TAU, THETA_THRESHOLD, X_THRESHOLD


def launch_shape(n: int) -> tuple[int, int]:
    """(envs per program, warps per program), the fastest measured on an H200: one env
    per thread up to 16384 envs, two beyond."""
    return (128, 4) if n <= 16384 else (256, 4)


_INTERPRET = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")


@triton.jit
def _sin(x):
    if _INTERPRET:
        return tl.sin(x)
    else:
        return libdevice.sin(x)


@triton.jit
def _cos(x):
    if _INTERPRET:
        return tl.cos(x)
    else:
        return libdevice.cos(x)


@triton.jit
def _exp(x):
    if _INTERPRET:
        return tl.exp(x)
    else:
        return libdevice.exp(x)


PARAM_ORDER = ("cart_mass", "pole_mass", "pole_length", "motor_gain", "gravity")


@triton.jit
def _hash32(x):
    # The mixer of envs.randomization._hash32, on uint32 (multiplies wrap mod 2^32).
    x = x ^ (x >> 16)
    x = x * 0x21F0AAAD
    x = x ^ (x >> 15)
    x = x * 0x735A2D97
    return x ^ (x >> 15)


@triton.jit
def _uniform(stream, index):
    # CounterRandom.uniform: element `index` of the draw whose stream value is `stream`.
    bits = _hash32(index.to(tl.uint32) * 0x27D4EB2F + stream)
    return (bits >> 8).to(tl.float32) * (1.0 / 16777216.0)


@triton.jit
def _stream(key, counter):
    # hash32((counter * 0x61C88647 + key) mod 2^32), as CounterRandom.bits.
    return _hash32((counter * 0x61C88647 + key).to(tl.uint32))


@triton.jit
def _columns(tile):
    """[BLOCK, 4] rows -> their four columns [BLOCK] each."""
    even, odd = tl.split(tl.reshape(tile, (tile.shape[0], 2, 2)))  # columns 0, 2 and 1, 3
    first, third = tl.split(even)
    second, fourth = tl.split(odd)
    return first, second, third, fourth


@triton.jit
def _rows(first, second, third, fourth, BLOCK: tl.constexpr):
    """Four columns [BLOCK] -> [BLOCK, 4] rows (the inverse of _columns)."""
    return tl.reshape(tl.join(tl.join(first, third), tl.join(second, fourth)), (BLOCK, 4))


@triton.jit
def _load_rows(ptr, offs, mask):
    """The four columns [BLOCK] of rows ``offs`` of an [N, 4] float32 tensor, one 16-byte
    vector load per row. On the GPU in PTX: each thread keeps the rows of its own envs in
    registers, where loading [BLOCK, 4] tiles made Triton move them through shared memory
    to split them into columns."""
    if _INTERPRET:
        tile = offs[:, None] * 4 + tl.arange(0, 4)[None, :]
        return _columns(tl.load(ptr + tile, mask=mask[:, None], other=0.0))
    else:
        # Addresses as integers (inline asm takes no pointers); rows past n read row 0.
        row = (ptr + tl.where(mask, offs, 0) * 4).to(tl.int64, bitcast=True)
        return tl.inline_asm_elementwise(
            "ld.global.v4.f32 {$0, $1, $2, $3}, [$4];",
            "=f,=f,=f,=f,l",
            [row],
            dtype=(tl.float32, tl.float32, tl.float32, tl.float32),
            is_pure=True,
            pack=1,
        )


@triton.jit
def _store_rows(ptr, offs, mask, c0, c1, c2, c3, BLOCK: tl.constexpr):
    """Rows ``offs`` (where mask) of an [N, 4] float32 tensor from four columns."""
    if _INTERPRET:
        tile = offs[:, None] * 4 + tl.arange(0, 4)[None, :]
        tl.store(ptr + tile, _rows(c0, c1, c2, c3, BLOCK), mask=mask[:, None])
    else:
        tl.inline_asm_elementwise(
            "{ .reg .pred row_p; setp.ne.b32 row_p, $6, 0; "
            "@row_p st.global.v4.f32 [$1], {$2, $3, $4, $5}; mov.b32 $0, 0; }",
            "=r,l,f,f,f,f,r",
            [(ptr + offs * 4).to(tl.int64, bitcast=True), c0, c1, c2, c3, mask.to(tl.int32)],
            dtype=tl.int32,
            is_pure=False,
            pack=1,
        )


@triton.jit
def _redraw(
    ptr, offs, local, mask, done, stream, nominal, low, span,
    LOG: tl.constexpr, SCALE: tl.constexpr, PER_ENV: tl.constexpr,
):  # fmt: skip
    """Randomizer.sample for one ranged parameter, stored where done; with PER_ENV, ``low``
    and ``span`` point at per-env bounds (a batch of members)."""
    u = _uniform(stream, local)
    if PER_ENV:
        low = tl.load(low + offs, mask=mask, other=0.0)
        span = tl.load(span + offs, mask=mask, other=0.0)
    if LOG:
        fresh = _exp(low + span * u)
    else:
        fresh = low + span * u
    if SCALE:
        fresh = fresh * nominal
    tl.store(ptr + offs, fresh, mask=mask & done)


@triton.jit
def _now(ptr, offs, mask, nominal, RANGED: tl.constexpr):
    """A parameter's value per env [BLOCK]: loaded if ranged, else the nominal constant."""
    value = tl.zeros_like(offs.to(tl.float32)) + nominal
    if RANGED:
        value = tl.load(ptr + offs, mask=mask, other=1.0)
    return value


@triton.jit
def _physics(
    x, x_dot, theta, theta_dot, actions, offs, mask, force_mag, tau,
    cart, pole, length, gain, gravity, DISCRETE: tl.constexpr,
):  # fmt: skip
    """Cartpole._physics_step, op for op (IEEE division and libdevice sin/cos, as torch)."""
    if DISCRETE:
        a = tl.load(actions + offs, mask=mask, other=0).to(tl.float32)
        force = (a * 2.0 - 1.0) * force_mag * gain
    else:
        a = tl.load(actions + offs, mask=mask, other=0.0)
        force = tl.minimum(tl.maximum(a, -1.0), 1.0) * force_mag * gain
    total_mass = cart + pole
    polemass_length = pole * length
    cos = _cos(theta)
    sin = _sin(theta)
    temp = tl.div_rn(force + polemass_length * (theta_dot * theta_dot) * sin, total_mass)
    theta_acc = tl.div_rn(
        gravity * sin - cos * temp,
        length * (1.3333333333333333 - tl.div_rn(pole * (cos * cos), total_mass)),
    )
    x_acc = temp - tl.div_rn(polemass_length * theta_acc * cos, total_mass)
    return (
        x + tau * x_dot,
        x_dot + tau * x_acc,
        theta + tau * theta_dot,
        theta_dot + tau * theta_acc,
    )


@triton.jit
def _cartpole_step(
    obs_in, actions, obs_out, final_out, term_out, trunc_out, episode_step,
    counter_in, counter_out, sums, key, n, block_n, max_steps,
    force_mag, tau, x_limit, theta_limit, reset_bound,
    p_cart, p_pole, p_len, p_gain, p_grav,
    nom_cart, nom_pole, nom_len, nom_gain, nom_grav,
    lo_cart, lo_pole, lo_len, lo_gain, lo_grav,
    sp_cart, sp_pole, sp_len, sp_gain, sp_grav,
    d_cart, d_pole, d_len, d_gain, d_grav, draws,
    RANGED: tl.constexpr, LOG: tl.constexpr, SCALE: tl.constexpr,
    DISCRETE: tl.constexpr, BLOCK: tl.constexpr, MEMBERS: tl.constexpr,
    STORE_FINAL: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    # With MEMBERS, block k of ``block_n`` envs is member k's env alone (envs.members): it
    # draws from its own key (``key`` points at one per block) at its own env indices, has
    # per-env range bounds, and sums its statistics into its own row of ``sums`` [K, 4]
    # (BLOCK divides block_n, so a program lies in one block). Else block_n == n.
    if MEMBERS:
        member = offs // block_n
        local = offs - member * block_n
        key = tl.load(key + member, mask=mask, other=0)
        row = (pid * BLOCK) // block_n * 4
    else:
        local = offs
        row = 0
    counter = tl.load(counter_in)  # with the other loads: one memory round trip less
    x, x_dot, theta, theta_dot = _load_rows(obs_in, offs, mask)
    cart = _now(p_cart, offs, mask, nom_cart, RANGED & 1)
    pole = _now(p_pole, offs, mask, nom_pole, RANGED & 2)
    length = _now(p_len, offs, mask, nom_len, RANGED & 4)
    gain = _now(p_gain, offs, mask, nom_gain, RANGED & 8)
    gravity = _now(p_grav, offs, mask, nom_grav, RANGED & 16)

    x_new, x_dot_new, theta_new, theta_dot_new = _physics(
        x, x_dot, theta, theta_dot, actions, offs, mask, force_mag, tau,
        cart, pole, length, gain, gravity, DISCRETE,
    )  # fmt: skip

    steps = tl.load(episode_step + offs, mask=mask, other=0).to(tl.int32) + 1
    terminated = (tl.abs(x_new) > x_limit) | (tl.abs(theta_new) > theta_limit)
    truncated = steps >= max_steps
    done = terminated | truncated
    if STORE_FINAL:  # else `_cartpole_final` recomputes them when they are asked for
        # Final observations where an episode ended (elsewhere final_obs reads obs), as
        # both rows of a 32-byte pair where either ended: faster on an H200 than the
        # scattered 16-byte rows alone (issue 17's notes).
        ended = tl.reshape(done.to(tl.int32), (BLOCK // 2, 2))
        pair = tl.broadcast_to(tl.max(ended, axis=1)[:, None], (BLOCK // 2, 2))
        rows = mask & (tl.reshape(pair, (BLOCK,)) != 0)
        _store_rows(final_out, offs, rows, x_new, x_dot_new, theta_new, theta_dot_new, BLOCK)
    tl.store(term_out + offs, terminated, mask=mask)
    tl.store(trunc_out + offs, truncated, mask=mask)

    # Auto-reset with the draws of TensorTask._reset_where: the state (one draw of 4 x n),
    # then each randomised parameter in PARAM_ORDER (one draw of n each).
    stream = _stream(key, counter)
    x_new = tl.where(done, (2.0 * _uniform(stream, local) - 1.0) * reset_bound, x_new)
    x_dot_new = tl.where(
        done, (2.0 * _uniform(stream, local + block_n) - 1.0) * reset_bound, x_dot_new
    )
    theta_new = tl.where(
        done, (2.0 * _uniform(stream, local + 2 * block_n) - 1.0) * reset_bound, theta_new
    )
    theta_dot_new = tl.where(
        done, (2.0 * _uniform(stream, local + 3 * block_n) - 1.0) * reset_bound, theta_dot_new
    )
    _store_rows(obs_out, offs, mask, x_new, x_dot_new, theta_new, theta_dot_new, BLOCK)
    tl.store(
        episode_step + offs, tl.where(done, 0, steps).to(episode_step.dtype.element_ty), mask=mask
    )
    if RANGED & 1:
        _redraw(p_cart, offs, local, mask, done, _stream(key, counter + d_cart),
                nom_cart, lo_cart, sp_cart, LOG & 1, SCALE & 1,
                MEMBERS)  # fmt: skip
    if RANGED & 2:
        _redraw(p_pole, offs, local, mask, done, _stream(key, counter + d_pole),
                nom_pole, lo_pole, sp_pole, LOG & 2, SCALE & 2,
                MEMBERS)  # fmt: skip
    if RANGED & 4:
        _redraw(p_len, offs, local, mask, done, _stream(key, counter + d_len),
                nom_len, lo_len, sp_len, LOG & 4, SCALE & 4,
                MEMBERS)  # fmt: skip
    if RANGED & 8:
        _redraw(p_gain, offs, local, mask, done, _stream(key, counter + d_gain),
                nom_gain, lo_gain, sp_gain, LOG & 8, SCALE & 8,
                MEMBERS)  # fmt: skip
    if RANGED & 16:
        _redraw(p_grav, offs, local, mask, done, _stream(key, counter + d_grav),
                nom_grav, lo_grav, sp_grav, LOG & 16, SCALE & 16,
                MEMBERS)  # fmt: skip
    if pid == 0:
        tl.store(counter_out, counter + draws)

    # Episode statistics [count, return, length, alive] in one relaxed vector atomic per
    # program, last (scalar atomics, acq_rel by default, cost more than the rest of the
    # step). Every step earns 1, so an episode's return (and its alive term) is its length.
    ended = tl.where(mask & done, 1.0, 0.0)
    length_sum = tl.sum(ended * steps.to(tl.float32), axis=0)
    count = tl.sum(ended, axis=0)
    which = tl.arange(0, 4)
    tl.atomic_add(sums + row + which, tl.where(which == 0, count, length_sum), sem="relaxed")


@triton.jit
def _cartpole_final(
    obs_in, actions, obs, term, trunc, out, n, force_mag, tau,
    cart, pole, length, gain, gravity, DISCRETE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """final_obs of a step whose parameters are all nominal: its physics again from the
    state and actions it read, where an episode ended; obs elsewhere."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x, x_dot, theta, theta_dot = _load_rows(obs_in, offs, mask)
    one = tl.zeros_like(x) + 1.0
    f0, f1, f2, f3 = _physics(
        x, x_dot, theta, theta_dot, actions, offs, mask, force_mag, tau,
        one * cart, one * pole, one * length, one * gain, one * gravity, DISCRETE,
    )  # fmt: skip
    o0, o1, o2, o3 = _load_rows(obs, offs, mask)
    done = (
        tl.load(term + offs, mask=mask, other=0) | tl.load(trunc + offs, mask=mask, other=0)
    ) != 0
    _store_rows(
        out, offs, mask,
        tl.where(done, f0, o0), tl.where(done, f1, o1),
        tl.where(done, f2, o2), tl.where(done, f3, o3), BLOCK,
    )  # fmt: skip


class FusedCartpoleStep:
    """`Cartpole.step` as one kernel launch (set up by `Cartpole.fuse`).

    The observation it returns holds the env's state (the next step reads it): read it,
    never write to it.
    """

    def __init__(self, env: Any) -> None:
        self.env = env
        if env.config.max_episode_steps < 2**15:  # 2 bytes per env step less to move
            env.episode_step = env.episode_step.to(torch.int16)
        # The state as one [N, 4] tensor from the start, as every step leaves it: envs fused
        # alike have the same tensors (a warm worker refills one from the other).
        env.set_packed_state(env.packed_state())
        rand = env.randomizer
        self.flags = {"RANGED": 0, "LOG": 0, "SCALE": 0}
        self.nominal, self.draw = [], []
        draws = 1  # the reset state's draw comes first
        for bit, name in enumerate(PARAM_ORDER):
            self.nominal.append(rand.nominal[name])
            spec = rand.ranges.get(name)
            self.draw.append(draws)
            if spec is not None:
                draws += 1
                self.flags["RANGED"] |= 1 << bit
                if spec.distribution == "log_uniform":
                    self.flags["LOG"] |= 1 << bit
                if spec.operation == "scale":
                    self.flags["SCALE"] |= 1 << bit
        self.draws = draws
        self.spare = torch.zeros_like(env.random.counter)  # where the counter goes next
        self.one = torch.ones((), device=env.device)

    def __call__(self, actions: torch.Tensor) -> EnvStep:
        env, n = self.env, self.env.num_envs
        state = env.packed_state()  # [N, 4]
        obs = torch.empty_like(state)
        # With every parameter nominal, final_obs is recomputed when read: storing the
        # rows of ended episodes was the costliest part of the step at 1M envs on an H200
        # (issue 17's notes).
        store_final = self.flags["RANGED"] != 0
        final_rows = torch.empty_like(state) if store_final else obs
        terminated = torch.empty(n, dtype=torch.bool, device=env.device)
        truncated = torch.empty(n, dtype=torch.bool, device=env.device)
        if self.spare is env.random.counter:  # load_tensors may have handed it back
            self.spare = torch.zeros_like(self.spare)
        counter_in, counter_out = env.random.counter, self.spare
        discrete = env.action_space.kind == "discrete"
        acts = actions if discrete else actions.reshape(n)
        block, warps = launch_shape(n)
        # A batch of members (envs.members): blocks of block_n envs, one key each.
        block_n = getattr(env.stats, "block", None)
        members = block_n is not None
        if members:
            while block_n % block:  # a program within one block (a power of two)
                block //= 2
        key = env.random.keys if members else env.random.key
        # Range bounds: floats, or per-env tensors in a batch (Randomizer.bounds).
        bounds = [
            env.randomizer.bounds(k) if k in env.randomizer.ranges else (0.0, 0.0)
            for k in PARAM_ORDER
        ]
        _cartpole_step[(triton.cdiv(n, block),)](
            state, acts, obs, final_rows, terminated,
            truncated, env.episode_step, counter_in, counter_out, env.stats.sums,
            key, n, block_n or n, env.config.max_episode_steps,
            FORCE_MAG, TAU, X_THRESHOLD, THETA_THRESHOLD, RESET_BOUND,
            *(env.params[k] for k in PARAM_ORDER), *self.nominal,
            *(low for low, _ in bounds), *(span for _, span in bounds),
            *self.draw, self.draws, DISCRETE=discrete, BLOCK=block, MEMBERS=members,
            STORE_FINAL=store_final, num_warps=warps, **self.flags,
        )  # fmt: skip
        env.random.counter, self.spare = counter_out, counter_in
        env.set_packed_state(obs)

        def final_obs() -> torch.Tensor:
            if store_final:
                return torch.where((terminated | truncated).unsqueeze(1), final_rows, obs)
            out = torch.empty_like(obs)
            _cartpole_final[(triton.cdiv(n, block),)](
                state, acts, obs, terminated, truncated, out, n, FORCE_MAG, TAU,
                *self.nominal, DISCRETE=discrete, BLOCK=block, num_warps=warps,
            )  # fmt: skip
            return out

        # Every step earns 1: the reward is a stride-0 view of one 1 (no [N] write per step;
        # writing to it in place raises instead of changing later rewards).
        reward = self.one.expand(n)
        return EnvStep(obs, reward, terminated, truncated, StepInfo(final_obs=final_obs))
