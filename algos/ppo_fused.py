"""PPO's own work as Triton kernels on CUDA (experiment.fused_algo): a policy step in three,
the values of final and bootstrap observations in one each, GAE in one, each minibatch step
in three.

The policy step: the observation statistics in parts, their merge into the running mean and
variance, then normalisation, both networks, sampling from the drawn noise, log-probabilities
and the rollout-storage writes. An iteration of the torch steps at 2048 envs launched 4,502
kernels (gathers, two MLPs forward and backward through autograd, losses, clipping, Adam per
parameter; 1,348 compiled), this one 306 (reports.iteration_kernels, H200). A minibatch step
is: (1) one kernel whose programs each take a share of the minibatch's rows, run the actor
(or the critic) forward, the losses' gradients and the backward pass in registers, and write
their partial weight gradients and loss sums; (2) one that adds the partials, the squared
gradient norm per chunk and, in its first program, the minibatch's statistics, Adam's step
count and the next adaptive lr; (3) clipping and Adam over the flat parameters. The sums run
in a fixed order, so a replay computes the same bits.

It computes what `PPO`'s torch steps compute (the gpu tests and the interpreter tests compare
the two) for two hidden layers of power-of-two widths 16..128, float32, one process
(`algos.ppo.fused_unavailable` says which configs). Triton's CPU interpreter runs the kernels
too (TRITON_INTERPRET=1).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

if TYPE_CHECKING:
    from algos.ppo import PPO

ROWS = 16  # rows of a minibatch per block (tl.dot needs >= 16)
WARPS = 4  # warps per program of the minibatch kernel
# tl.dot's input precision: "tf32x3" splits each float32 operand into TF32 parts and sums
# three tensor-core products, as accurate as "ieee" (float32 FMAs) to about 1e-6 and, on
# an H200, 2048 envs: 2.7 against 3.6 ms per iteration (the interpreter computes "ieee")
PRECISION = "tf32x3"
FORWARD_ROWS = 64  # envs per program of the policy step and the value kernels
FORWARD_WARPS = 4
MAX_PROGRAMS = 264  # row-block programs per minibatch (two per SM on an H200)
CHUNK = 256  # parameters per program of the reduce and Adam kernels
REDUCE_PARTS = 16  # partial gradients summed per load
ACTIVATIONS = {"tanh": 0, "relu": 1, "elu": 2}
_INTERPRET = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")
_HALF_LOG_2PI = tl.constexpr(0.5 * math.log(2.0 * math.pi))


def _pad(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


@triton.jit
def _tanh(x):
    if _INTERPRET:
        return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)
    else:
        return libdevice.tanh(x)


@triton.jit
def _activate(pre, ACT: tl.constexpr):
    if ACT == 0:
        return _tanh(pre)
    elif ACT == 1:
        return tl.maximum(pre, 0.0)
    else:
        return tl.where(pre > 0.0, pre, tl.exp(pre) - 1.0)


@triton.jit
def _activation_grad(h, ACT: tl.constexpr):
    """d act / d pre-activation, from the activation's output h."""
    if ACT == 0:
        return 1.0 - h * h
    elif ACT == 1:
        return (h > 0.0).to(tl.float32)
    else:
        return tl.where(h > 0.0, 1.0, h + 1.0)


@triton.jit
def _load_w(ptr, n_in, n_out, IN: tl.constexpr, OUT: tl.constexpr):
    """nn.Linear's weight [n_out, n_in] as [IN, OUT] (zero-padded)."""
    ki = tl.arange(0, IN)[:, None]
    ko = tl.arange(0, OUT)[None, :]
    return tl.load(ptr + ko * n_in + ki, mask=(ki < n_in) & (ko < n_out), other=0.0)


@triton.jit
def _store_w(ptr, value, n_in, n_out, IN: tl.constexpr, OUT: tl.constexpr):
    ki = tl.arange(0, IN)[:, None]
    ko = tl.arange(0, OUT)[None, :]
    tl.store(ptr + ko * n_in + ki, value, mask=(ki < n_in) & (ko < n_out))


@triton.jit
def _dot(a, b, DOT: tl.constexpr):
    if _INTERPRET:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=DOT)


@triton.jit
def _minibatch_grads(
    obs_ptr, act_ptr, old_logp_ptr, old_v_ptr, adv_ptr, ret_ptr, idx_ptr, adv_stat_ptr,
    params_ptr, partial_ptr, stats_ptr,
    m, n_obs, n_act, n_params,
    a_w1, a_b1, a_w2, a_b2, a_w3, a_b3, log_std_off,
    c_w1, c_b1, c_w2, c_b2, c_w3, c_b3,
    clip, value_coef, entropy_coef,
    OBS: tl.constexpr, HA1: tl.constexpr, HA2: tl.constexpr, HC1: tl.constexpr,
    HC2: tl.constexpr, ACTS: tl.constexpr, ACT: tl.constexpr, DISCRETE: tl.constexpr,
    NORM_ADV: tl.constexpr, CLIP_VALUE: tl.constexpr, ROWS: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Program (p, 0): the actor's partial gradients and loss sums over its row blocks;
    program (p, 1): the critic's. Writes partial_ptr[p, :] at its parameters' offsets and
    stats_ptr[p, :] = (surrogate, value loss, entropy, KL, clip fraction) sums."""
    if tl.program_id(1) == 0:
        _actor_grads(
            obs_ptr, act_ptr, old_logp_ptr, old_v_ptr, adv_ptr, ret_ptr, idx_ptr, adv_stat_ptr,
            params_ptr, partial_ptr, stats_ptr, m, n_obs, n_act, n_params,
            a_w1, a_b1, a_w2, a_b2, a_w3, a_b3, log_std_off, c_w1, c_b1, c_w2, c_b2, c_w3, c_b3,
            clip, value_coef, entropy_coef, OBS, HA1, HA2, HC1, HC2, ACTS, ACT, DISCRETE,
            NORM_ADV, CLIP_VALUE, ROWS, DOT,
        )  # fmt: skip
    else:
        _critic_grads(
            obs_ptr, act_ptr, old_logp_ptr, old_v_ptr, adv_ptr, ret_ptr, idx_ptr, adv_stat_ptr,
            params_ptr, partial_ptr, stats_ptr, m, n_obs, n_act, n_params,
            a_w1, a_b1, a_w2, a_b2, a_w3, a_b3, log_std_off, c_w1, c_b1, c_w2, c_b2, c_w3, c_b3,
            clip, value_coef, entropy_coef, OBS, HA1, HA2, HC1, HC2, ACTS, ACT, DISCRETE,
            NORM_ADV, CLIP_VALUE, ROWS, DOT,
        )  # fmt: skip


@triton.jit
def _actor_grads(
    obs_ptr, act_ptr, old_logp_ptr, old_v_ptr, adv_ptr, ret_ptr, idx_ptr, adv_stat_ptr,
    params_ptr, partial_ptr, stats_ptr,
    m, n_obs, n_act, n_params,
    a_w1, a_b1, a_w2, a_b2, a_w3, a_b3, log_std_off,
    c_w1, c_b1, c_w2, c_b2, c_w3, c_b3,
    clip, value_coef, entropy_coef,
    OBS: tl.constexpr, HA1: tl.constexpr, HA2: tl.constexpr, HC1: tl.constexpr,
    HC2: tl.constexpr, ACTS: tl.constexpr, ACT: tl.constexpr, DISCRETE: tl.constexpr,
    NORM_ADV: tl.constexpr, CLIP_VALUE: tl.constexpr, ROWS: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    progs = tl.num_programs(0)
    kr = tl.arange(0, ROWS)
    ko = tl.arange(0, OBS)
    inv_m = 1.0 / m.to(tl.float32)
    part = partial_ptr + pid * n_params
    w1 = _load_w(params_ptr + a_w1, n_obs, HA1, OBS, HA1)
    b1 = tl.load(params_ptr + a_b1 + tl.arange(0, HA1))
    w2 = _load_w(params_ptr + a_w2, HA1, HA2, HA1, HA2)
    b2 = tl.load(params_ptr + a_b2 + tl.arange(0, HA2))
    w3 = _load_w(params_ptr + a_w3, HA2, n_act, HA2, ACTS)
    ka = tl.arange(0, ACTS)
    valid = ka < n_act
    b3 = tl.load(params_ptr + a_b3 + ka, mask=valid, other=0.0)
    if NORM_ADV:
        adv_mean = tl.load(adv_stat_ptr)
        adv_std = tl.load(adv_stat_ptr + 1)
    g_w1 = tl.zeros((OBS, HA1), tl.float32)
    g_b1 = tl.zeros((HA1,), tl.float32)
    g_w2 = tl.zeros((HA1, HA2), tl.float32)
    g_b2 = tl.zeros((HA2,), tl.float32)
    g_w3 = tl.zeros((HA2, ACTS), tl.float32)
    g_b3 = tl.zeros((ACTS,), tl.float32)
    g_ls = tl.zeros((ACTS,), tl.float32)
    s_surr = tl.zeros((ROWS,), tl.float32)
    s_ent = tl.zeros((ROWS,), tl.float32)
    s_kl = tl.zeros((ROWS,), tl.float32)
    s_clip = tl.zeros((ROWS,), tl.float32)
    if not DISCRETE:
        log_std = tl.load(params_ptr + log_std_off + ka, mask=valid, other=0.0)
        std = tl.exp(log_std)
    for start in range(pid * ROWS, m, progs * ROWS):
        r = start + kr
        rm = r < m
        i = tl.load(idx_ptr + r, mask=rm, other=0)
        x = tl.load(
            obs_ptr + i[:, None] * n_obs + ko[None, :],
            mask=rm[:, None] & (ko[None, :] < n_obs),
            other=0.0,
        )
        h1 = _activate(_dot(x, w1, DOT) + b1[None, :], ACT)
        h2 = _activate(_dot(h1, w2, DOT) + b2[None, :], ACT)
        out = _dot(h2, w3, DOT) + b3[None, :]
        if DISCRETE:
            a = tl.load(act_ptr + i, mask=rm, other=0)
            logits = tl.where(valid[None, :], out, -float("inf"))
            z = logits - tl.max(logits, 1)[:, None]
            e = tl.where(valid[None, :], tl.exp(z), 0.0)
            total = tl.sum(e, 1)
            logp_all = tl.where(valid[None, :], z - tl.log(total)[:, None], 0.0)
            p = e / total[:, None]
            onehot = (ka[None, :] == a[:, None]).to(tl.float32)
            logp = tl.sum(onehot * logp_all, 1)
            ent = -tl.sum(p * logp_all, 1)
        else:
            am = rm[:, None] & valid[None, :]
            a = tl.load(act_ptr + i[:, None] * n_act + ka[None, :], mask=am, other=0.0)
            zs = (a - out) / std[None, :]
            per_dim = -0.5 * zs * zs - log_std[None, :] - _HALF_LOG_2PI
            logp = tl.sum(tl.where(valid[None, :], per_dim, 0.0), 1)
            ent_dims = tl.where(valid, 0.5 + _HALF_LOG_2PI + log_std, 0.0)
            ent = tl.zeros((ROWS,), tl.float32) + tl.sum(ent_dims, 0)
        old = tl.load(old_logp_ptr + i, mask=rm, other=0.0)
        adv = tl.load(adv_ptr + i, mask=rm, other=0.0)
        if NORM_ADV:
            adv = (adv - adv_mean) / (adv_std + 1e-8)
        log_ratio = logp - old
        ratio = tl.exp(log_ratio)
        s1 = -adv * ratio
        s2 = -adv * tl.minimum(tl.maximum(ratio, 1.0 - clip), 1.0 + clip)
        inside = ((ratio >= 1.0 - clip) & (ratio <= 1.0 + clip)).to(tl.float32)
        # torch.maximum's gradient: to the larger side, halved on a tie
        tie = -adv * (1.0 + inside) * 0.5
        d_ratio = tl.where(s1 > s2, -adv, tl.where(s1 < s2, -adv * inside, tie))
        d_logp = tl.where(rm, d_ratio * ratio * inv_m, 0.0)
        d_ent = tl.where(rm, -entropy_coef * inv_m, 0.0)
        if DISCRETE:
            d_ent_out = d_ent[:, None] * p * (logp_all + ent[:, None])
            d_out = d_logp[:, None] * (onehot - p) - d_ent_out
            d_out = tl.where(valid[None, :], d_out, 0.0)
        else:
            d_out = tl.where(valid[None, :], d_logp[:, None] * zs / std[None, :], 0.0)
            g_ls += tl.sum(d_logp[:, None] * (zs * zs - 1.0) + d_ent[:, None], 0)
        s_surr += tl.where(rm, tl.maximum(s1, s2), 0.0)
        s_ent += tl.where(rm, ent, 0.0)
        s_kl += tl.where(rm, (ratio - 1.0) - log_ratio, 0.0)
        s_clip += tl.where(rm & (tl.abs(ratio - 1.0) > clip), 1.0, 0.0)
        g_w3 += _dot(tl.trans(h2), d_out, DOT)
        g_b3 += tl.sum(d_out, 0)
        d2 = _dot(d_out, tl.trans(w3), DOT) * _activation_grad(h2, ACT)
        g_w2 += _dot(tl.trans(h1), d2, DOT)
        g_b2 += tl.sum(d2, 0)
        d1 = _dot(d2, tl.trans(w2), DOT) * _activation_grad(h1, ACT)
        g_w1 += _dot(tl.trans(x), d1, DOT)
        g_b1 += tl.sum(d1, 0)
    _store_w(part + a_w1, g_w1, n_obs, HA1, OBS, HA1)
    tl.store(part + a_b1 + tl.arange(0, HA1), g_b1)
    _store_w(part + a_w2, g_w2, HA1, HA2, HA1, HA2)
    tl.store(part + a_b2 + tl.arange(0, HA2), g_b2)
    _store_w(part + a_w3, g_w3, HA2, n_act, HA2, ACTS)
    tl.store(part + a_b3 + ka, g_b3, mask=valid)
    if not DISCRETE:
        tl.store(part + log_std_off + ka, g_ls, mask=valid)
    tl.store(stats_ptr + pid * 5 + 0, tl.sum(s_surr, 0))
    tl.store(stats_ptr + pid * 5 + 2, tl.sum(s_ent, 0))
    tl.store(stats_ptr + pid * 5 + 3, tl.sum(s_kl, 0))
    tl.store(stats_ptr + pid * 5 + 4, tl.sum(s_clip, 0))


@triton.jit
def _critic_grads(
    obs_ptr, act_ptr, old_logp_ptr, old_v_ptr, adv_ptr, ret_ptr, idx_ptr, adv_stat_ptr,
    params_ptr, partial_ptr, stats_ptr,
    m, n_obs, n_act, n_params,
    a_w1, a_b1, a_w2, a_b2, a_w3, a_b3, log_std_off,
    c_w1, c_b1, c_w2, c_b2, c_w3, c_b3,
    clip, value_coef, entropy_coef,
    OBS: tl.constexpr, HA1: tl.constexpr, HA2: tl.constexpr, HC1: tl.constexpr,
    HC2: tl.constexpr, ACTS: tl.constexpr, ACT: tl.constexpr, DISCRETE: tl.constexpr,
    NORM_ADV: tl.constexpr, CLIP_VALUE: tl.constexpr, ROWS: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    progs = tl.num_programs(0)
    kr = tl.arange(0, ROWS)
    ko = tl.arange(0, OBS)
    inv_m = 1.0 / m.to(tl.float32)
    part = partial_ptr + pid * n_params
    w1 = _load_w(params_ptr + c_w1, n_obs, HC1, OBS, HC1)
    b1 = tl.load(params_ptr + c_b1 + tl.arange(0, HC1))
    w2 = _load_w(params_ptr + c_w2, HC1, HC2, HC1, HC2)
    b2 = tl.load(params_ptr + c_b2 + tl.arange(0, HC2))
    w3 = tl.load(params_ptr + c_w3 + tl.arange(0, HC2))
    b3 = tl.load(params_ptr + c_b3)
    g_w1 = tl.zeros((OBS, HC1), tl.float32)
    g_b1 = tl.zeros((HC1,), tl.float32)
    g_w2 = tl.zeros((HC1, HC2), tl.float32)
    g_b2 = tl.zeros((HC2,), tl.float32)
    g_w3 = tl.zeros((HC2,), tl.float32)
    g_b3 = tl.zeros((ROWS,), tl.float32)
    s_value = tl.zeros((ROWS,), tl.float32)
    for start in range(pid * ROWS, m, progs * ROWS):
        r = start + kr
        rm = r < m
        i = tl.load(idx_ptr + r, mask=rm, other=0)
        x = tl.load(
            obs_ptr + i[:, None] * n_obs + ko[None, :],
            mask=rm[:, None] & (ko[None, :] < n_obs),
            other=0.0,
        )
        h1 = _activate(_dot(x, w1, DOT) + b1[None, :], ACT)
        h2 = _activate(_dot(h1, w2, DOT) + b2[None, :], ACT)
        v = tl.sum(h2 * w3[None, :], 1) + b3
        ret = tl.load(ret_ptr + i, mask=rm, other=0.0)
        diff = v - ret
        if CLIP_VALUE:
            old_v = tl.load(old_v_ptr + i, mask=rm, other=0.0)
            dv = v - old_v
            clipped = old_v + tl.minimum(tl.maximum(dv, -clip), clip)
            inside = ((dv >= -clip) & (dv <= clip)).to(tl.float32)
            u = diff * diff
            w = (clipped - ret) * (clipped - ret)
            du = 2.0 * diff
            dw = 2.0 * (clipped - ret) * inside
            loss = tl.maximum(u, w)
            d_v = tl.where(u > w, du, tl.where(u < w, dw, 0.5 * (du + dw)))
        else:
            loss = diff * diff
            d_v = 2.0 * diff
        d_v = tl.where(rm, d_v * value_coef * inv_m, 0.0)
        s_value += tl.where(rm, loss, 0.0)
        g_w3 += tl.sum(h2 * d_v[:, None], 0)
        g_b3 += d_v
        d2 = d_v[:, None] * w3[None, :] * _activation_grad(h2, ACT)
        g_w2 += _dot(tl.trans(h1), d2, DOT)
        g_b2 += tl.sum(d2, 0)
        d1 = _dot(d2, tl.trans(w2), DOT) * _activation_grad(h1, ACT)
        g_w1 += _dot(tl.trans(x), d1, DOT)
        g_b1 += tl.sum(d1, 0)
    _store_w(part + c_w1, g_w1, n_obs, HC1, OBS, HC1)
    tl.store(part + c_b1 + tl.arange(0, HC1), g_b1)
    _store_w(part + c_w2, g_w2, HC1, HC2, HC1, HC2)
    tl.store(part + c_b2 + tl.arange(0, HC2), g_b2)
    tl.store(part + c_w3 + tl.arange(0, HC2), g_w3)
    tl.store(part + c_b3, tl.sum(g_b3, 0))
    tl.store(stats_ptr + pid * 5 + 1, tl.sum(s_value, 0))


@triton.jit
def _reduce_grads(
    partial_ptr, grads_ptr, sq_ptr, stats_ptr, out_stats_ptr, steps_ptr, lr_ptr, lr_next_ptr,
    n_params, n_partial, m, desired_kl,
    ADAPTIVE: tl.constexpr, CHUNK: tl.constexpr, PARTS: tl.constexpr,
):  # fmt: skip
    """grads = the partials' sum; sq_ptr[chunk] = its squared norm. Program 0 also writes the
    minibatch's mean statistics, Adam's step count + 1 and the lr the next step takes."""
    pid = tl.program_id(0)
    k = pid * CHUNK + tl.arange(0, CHUNK)
    km = k < n_params
    kp = tl.arange(0, PARTS)
    acc = tl.zeros((PARTS, CHUNK), tl.float32)
    for p in range(0, n_partial, PARTS):  # PARTS partials per load, summed in a fixed order
        rows = p + kp
        mask = (rows < n_partial)[:, None] & km[None, :]
        acc += tl.load(partial_ptr + rows[:, None] * n_params + k[None, :], mask=mask, other=0.0)
    g = tl.sum(acc, 0)
    tl.store(grads_ptr + k, g, mask=km)
    tl.store(sq_ptr + pid, tl.sum(g * g, 0))
    if pid == 0:
        ks = tl.arange(0, 8)
        sums = tl.zeros((PARTS, 8), tl.float32)
        for p in range(0, n_partial, PARTS):
            rows = p + kp
            mask = (rows < n_partial)[:, None] & (ks < 5)[None, :]
            sums += tl.load(stats_ptr + rows[:, None] * 5 + ks[None, :], mask=mask, other=0.0)
        means = tl.sum(sums, 0) / m.to(tl.float32)
        tl.store(out_stats_ptr + ks, means, mask=ks < 5)
        tl.store(steps_ptr, tl.load(steps_ptr) + 1.0)
        lr = tl.load(lr_ptr)
        if ADAPTIVE:
            kl = tl.sum(tl.where(ks == 3, means, 0.0), 0)
            factor = tl.where(
                kl > 2.0 * desired_kl, 1.0 / 1.5, tl.where(kl < desired_kl / 2.0, 1.5, 1.0)
            )
            lr = tl.minimum(tl.maximum(lr * factor, 1e-5), 1e-2)
        tl.store(lr_next_ptr, lr)


@triton.jit
def _pow(base, exponent):
    if _INTERPRET:
        return tl.exp(exponent * tl.log(base))
    else:
        return libdevice.pow(base, exponent)


@triton.jit
def _clip_adam(
    params_ptr, grads_ptr, m_ptr, v_ptr, sq_ptr, steps_ptr, lr_ptr,
    n_params, n_chunks, max_norm, beta1, beta2, eps,
    CHUNK: tl.constexpr, NC: tl.constexpr,
):  # fmt: skip
    """Scale the gradients to norm <= max_norm (as clip_grad_norm_) and step Adam
    (algos.optim.Adam's arithmetic) on CHUNK parameters."""
    pid = tl.program_id(0)
    kc = tl.arange(0, NC)
    total = tl.sqrt(tl.sum(tl.load(sq_ptr + kc, mask=kc < n_chunks, other=0.0), 0))
    scale = tl.minimum(max_norm / (total + 1e-6), 1.0)
    t = tl.load(steps_ptr)
    lr = tl.load(lr_ptr)
    step_size = lr / (1.0 - _pow(beta1, t))
    bias2_sqrt = tl.sqrt(1.0 - _pow(beta2, t))
    k = pid * CHUNK + tl.arange(0, CHUNK)
    km = k < n_params
    g = tl.load(grads_ptr + k, mask=km, other=0.0) * scale
    m = tl.load(m_ptr + k, mask=km, other=0.0)
    v = tl.load(v_ptr + k, mask=km, other=0.0)
    m = m + (1.0 - beta1) * (g - m)
    v = v * beta2 + (1.0 - beta2) * g * g
    denom = tl.sqrt(v) / bias2_sqrt + eps
    p = tl.load(params_ptr + k, mask=km, other=0.0) - (m / denom) * step_size
    tl.store(m_ptr + k, m, mask=km)
    tl.store(v_ptr + k, v, mask=km)
    tl.store(params_ptr + k, p, mask=km)


@triton.jit
def _advantage_stats(adv_ptr, idx_ptr, out_ptr, m, ROWS: tl.constexpr):
    """out[j] = (mean, std) of the advantages at idx[j * m : (j + 1) * m] (std unbiased, two
    passes, as Tensor.std)."""
    j = tl.program_id(0)
    k = tl.arange(0, ROWS)
    acc = tl.zeros((ROWS,), tl.float32)
    for start in range(0, m, ROWS):
        r = start + k
        i = tl.load(idx_ptr + j * m + r, mask=r < m, other=0)
        acc += tl.load(adv_ptr + i, mask=r < m, other=0.0)
    mean = tl.sum(acc, 0) / m.to(tl.float32)
    acc = tl.zeros((ROWS,), tl.float32)
    for start in range(0, m, ROWS):
        r = start + k
        i = tl.load(idx_ptr + j * m + r, mask=r < m, other=0)
        d = tl.where(r < m, tl.load(adv_ptr + i, mask=r < m, other=0.0) - mean, 0.0)
        acc += d * d
    std = tl.sqrt(tl.sum(acc, 0) / (m - 1).to(tl.float32))
    tl.store(out_ptr + j * 2, mean)
    tl.store(out_ptr + j * 2 + 1, std)


@triton.jit
def _gae(
    rew_ptr, val_ptr, last_ptr, term_ptr, trunc_ptr, final_ptr, adv_ptr, ret_ptr,
    t_steps, n, gamma, gamma_lam, BLOCK: tl.constexpr,
):  # fmt: skip
    """algos.gae.compute_gae for scalar gamma and lambda, one env per lane, T in reverse."""
    k = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    km = k < n
    next_value = tl.load(last_ptr + k, mask=km, other=0.0)
    next_adv = tl.zeros((BLOCK,), tl.float32)
    for s in range(0, t_steps):
        t = t_steps - 1 - s
        o = t * n + k
        term = tl.load(term_ptr + o, mask=km, other=0).to(tl.int1)
        trunc = tl.load(trunc_ptr + o, mask=km, other=0).to(tl.int1)
        reward = tl.load(rew_ptr + o, mask=km, other=0.0)
        value = tl.load(val_ptr + o, mask=km, other=0.0)
        time_out = (trunc & ~term).to(tl.float32)
        reward = reward + gamma * tl.load(final_ptr + o, mask=km, other=0.0) * time_out
        not_done = 1.0 - (term | trunc).to(tl.float32)
        delta = reward + gamma * next_value * not_done - value
        next_adv = delta + gamma_lam * not_done * next_adv
        tl.store(adv_ptr + o, next_adv, mask=km)
        tl.store(ret_ptr + o, next_adv + value, mask=km)
        next_value = value


@triton.jit
def _mlp(x, params_ptr, w1, b1, w2, b2, w3, b3, n_in, n_out,
         IN: tl.constexpr, H1: tl.constexpr, H2: tl.constexpr, OUT: tl.constexpr,
         ACT: tl.constexpr, DOT: tl.constexpr):  # fmt: skip
    """An MLP of two hidden layers on rows x [R, IN]: its output [R, OUT] (zero-padded)."""
    ko = tl.arange(0, OUT)
    h = _activate(_dot(x, _load_w(params_ptr + w1, n_in, H1, IN, H1), DOT)
                  + tl.load(params_ptr + b1 + tl.arange(0, H1))[None, :], ACT)  # fmt: skip
    h = _activate(_dot(h, _load_w(params_ptr + w2, H1, H2, H1, H2), DOT)
                  + tl.load(params_ptr + b2 + tl.arange(0, H2))[None, :], ACT)  # fmt: skip
    out = _dot(h, _load_w(params_ptr + w3, H2, n_out, H2, OUT), DOT)
    return out + tl.load(params_ptr + b3 + ko, mask=ko < n_out, other=0.0)[None, :]


@triton.jit
def _normalized(obs_ptr, stride, mean_ptr, var_ptr, r, rm, n_obs, clip_obs,
                NORM: tl.constexpr, OBS: tl.constexpr):  # fmt: skip
    """Rows r of obs, standardised by the running statistics and clipped (RunningMeanStd)."""
    ko = tl.arange(0, OBS)
    om = ko < n_obs
    x = tl.load(obs_ptr + r[:, None] * stride + ko[None, :], mask=rm[:, None] & om[None, :],
                other=0.0)  # fmt: skip
    if NORM:
        mean = tl.load(mean_ptr + ko, mask=om, other=0.0)
        var = tl.load(var_ptr + ko, mask=om, other=1.0)
        x = (x - mean[None, :]) / tl.sqrt(var[None, :] + 1e-8)
        x = tl.minimum(tl.maximum(x, -clip_obs), clip_obs)
        x = tl.where(om[None, :], x, 0.0)
    return x


@triton.jit
def _moments(obs_ptr, stride, part_ptr, n, n_obs, per_program,
             OBS: tl.constexpr, ROWS: tl.constexpr):  # fmt: skip
    """part[p] = (mean [OBS], sum of squared deviations [OBS]) of program p's rows."""
    pid = tl.program_id(0)
    lo = pid * per_program
    hi = tl.minimum(lo + per_program, n)
    ko = tl.arange(0, OBS)
    om = ko < n_obs
    kr = tl.arange(0, ROWS)
    acc = tl.zeros((ROWS, OBS), tl.float32)
    for start in range(lo, hi, ROWS):
        r = start + kr
        mask = (r < hi)[:, None] & om[None, :]
        acc += tl.load(obs_ptr + r[:, None] * stride + ko[None, :], mask=mask, other=0.0)
    mean = tl.sum(acc, 0) / (hi - lo).to(tl.float32)
    acc = tl.zeros((ROWS, OBS), tl.float32)
    for start in range(lo, hi, ROWS):
        r = start + kr
        mask = (r < hi)[:, None] & om[None, :]
        x = tl.load(obs_ptr + r[:, None] * stride + ko[None, :], mask=mask, other=0.0)
        d = tl.where(mask, x - mean[None, :], 0.0)
        acc += d * d
    tl.store(part_ptr + pid * 2 * OBS + ko, mean)
    tl.store(part_ptr + pid * 2 * OBS + OBS + ko, tl.sum(acc, 0))


@triton.jit
def _merge_moments(part_ptr, mean_ptr, var_ptr, count_ptr, n, total_n, n_obs, per_program, programs,
                   OBS: tl.constexpr, NP: tl.constexpr):  # fmt: skip
    """The batch's mean and variance from the programs' parts (Chan et al.), merged into the
    running statistics as RunningMeanStd.update merges them."""
    kp = tl.arange(0, NP)
    ko = tl.arange(0, OBS)
    pm = kp < programs
    om = ko < n_obs
    m2d = pm[:, None] & om[None, :]
    means = tl.load(part_ptr + kp[:, None] * 2 * OBS + ko[None, :], mask=m2d, other=0.0)
    sq = tl.load(part_ptr + kp[:, None] * 2 * OBS + OBS + ko[None, :], mask=m2d, other=0.0)
    counts = tl.where(pm, tl.minimum(per_program, n - kp * per_program), 0).to(tl.float32)
    batch_mean = tl.sum(means * counts[:, None], 0) / total_n
    dev = tl.where(m2d, means - batch_mean[None, :], 0.0)
    batch_var = tl.sum(sq + counts[:, None] * dev * dev, 0) / total_n
    mean = tl.load(mean_ptr + ko, mask=om, other=0.0)
    var = tl.load(var_ptr + ko, mask=om, other=1.0)
    count = tl.load(count_ptr)
    delta = batch_mean - mean
    total = count + total_n
    new_mean = mean + delta * (total_n / total)
    m2 = var * count + batch_var * total_n + delta * delta * count * total_n / total
    tl.store(mean_ptr + ko, new_mean, mask=om)
    tl.store(var_ptr + ko, m2 / total, mask=om)
    tl.store(count_ptr, total)


@triton.jit
def _policy_step(
    obs_ptr, stride, mean_ptr, var_ptr, noise_ptr, params_ptr,
    nobs_ptr, act_ptr, logp_ptr, value_ptr,
    n, n_obs, n_act, clip_obs,
    a_w1, a_b1, a_w2, a_b2, a_w3, a_b3, log_std_off,
    c_w1, c_b1, c_w2, c_b2, c_w3, c_b3,
    OBS: tl.constexpr, HA1: tl.constexpr, HA2: tl.constexpr, HC1: tl.constexpr,
    HC2: tl.constexpr, ACTS: tl.constexpr, ACT: tl.constexpr, DISCRETE: tl.constexpr,
    NORM: tl.constexpr, ROWS: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """PPO._policy_step on ROWS envs: normalised obs, sampled actions from ``noise``, their
    log-probabilities and the values, written to the storage rows."""
    r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    rm = r < n
    ko = tl.arange(0, OBS)
    x = _normalized(obs_ptr, stride, mean_ptr, var_ptr, r, rm, n_obs, clip_obs, NORM, OBS)
    tl.store(nobs_ptr + r[:, None] * n_obs + ko[None, :], x,
             mask=rm[:, None] & (ko[None, :] < n_obs))  # fmt: skip
    out = _mlp(x, params_ptr, a_w1, a_b1, a_w2, a_b2, a_w3, a_b3, n_obs, n_act,
               OBS, HA1, HA2, ACTS, ACT, DOT)  # fmt: skip
    ka = tl.arange(0, ACTS)
    valid = ka < n_act
    am = rm[:, None] & valid[None, :]
    noise = tl.load(noise_ptr + r[:, None] * n_act + ka[None, :], mask=am, other=0.5)
    if DISCRETE:
        # Gumbel-max, as CategoricalHead.sample_from: argmax(out - log(-log(u)))
        perturbed = out - tl.log(-tl.log(tl.maximum(noise, 1e-20)))
        action = tl.argmax(tl.where(valid[None, :], perturbed, -float("inf")), 1)
        logits = tl.where(valid[None, :], out, -float("inf"))
        z = logits - tl.max(logits, 1)[:, None]
        e = tl.where(valid[None, :], tl.exp(z), 0.0)
        logp_all = z - tl.log(tl.sum(e, 1))[:, None]
        logp = tl.sum(tl.where(ka[None, :] == action[:, None], logp_all, 0.0), 1)
        tl.store(act_ptr + r, action.to(tl.int64), mask=rm)
    else:
        log_std = tl.load(params_ptr + log_std_off + ka, mask=valid, other=0.0)
        std = tl.exp(log_std)
        action = out + noise * std[None, :]
        zs = (action - out) / std[None, :]
        per_dim = -0.5 * zs * zs - log_std[None, :] - _HALF_LOG_2PI
        logp = tl.sum(tl.where(valid[None, :], per_dim, 0.0), 1)
        tl.store(act_ptr + r[:, None] * n_act + ka[None, :], action, mask=am)
    tl.store(logp_ptr + r, logp, mask=rm)
    v = _mlp(x, params_ptr, c_w1, c_b1, c_w2, c_b2, c_w3, c_b3, n_obs, 1,
             OBS, HC1, HC2, 16, ACT, DOT)  # fmt: skip
    tl.store(value_ptr + r, tl.sum(tl.where(tl.arange(0, 16)[None, :] == 0, v, 0.0), 1), mask=rm)


@triton.jit
def _values(
    obs_ptr, stride, mean_ptr, var_ptr, params_ptr, value_ptr,
    n, n_obs, clip_obs, c_w1, c_b1, c_w2, c_b2, c_w3, c_b3,
    OBS: tl.constexpr, HC1: tl.constexpr, HC2: tl.constexpr, ACT: tl.constexpr,
    NORM: tl.constexpr, ROWS: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """The critic's values of ROWS observations (normalised as the policy step does)."""
    r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    rm = r < n
    x = _normalized(obs_ptr, stride, mean_ptr, var_ptr, r, rm, n_obs, clip_obs, NORM, OBS)
    v = _mlp(x, params_ptr, c_w1, c_b1, c_w2, c_b2, c_w3, c_b3, n_obs, 1,
             OBS, HC1, HC2, 16, ACT, DOT)  # fmt: skip
    tl.store(value_ptr + r, tl.sum(tl.where(tl.arange(0, 16)[None, :] == 0, v, 0.0), 1), mask=rm)


class FusedPPO:
    """The fused kernels of one `PPO`: its parameters and Adam's moments become views of three
    flat buffers the kernels step in place; every scratch buffer is allocated here, once."""

    def __init__(self, ppo: PPO) -> None:
        self.ppo = ppo
        c = ppo.config
        model = ppo.model
        device = ppo.device
        actor = [model.actor[0], model.actor[2], model.actor[4]]
        critic = [model.critic[0], model.critic[2], model.critic[4]]
        order: list[torch.nn.Parameter] = []
        for layer in actor + critic:
            order += [layer.weight, layer.bias]
        self.discrete = not hasattr(model.head, "log_std")
        if not self.discrete:
            order.append(model.head.log_std)
        known = {id(p) for p in order}
        if any(id(p) not in known for p in model.parameters()):
            raise ValueError("the fused update knows the actor, the critic and log_std only")
        offsets, total = {}, 0
        for p in order:
            offsets[id(p)] = total
            total += p.numel()
        self.n_params = total
        self.params = torch.cat([p.detach().flatten() for p in order])
        for p in order:
            p.data = self.params[offsets[id(p)] : offsets[id(p)] + p.numel()].view_as(p)
        opt = ppo.optimizer
        self.exp_avg = torch.zeros(total, device=device)
        self.exp_avg_sq = torch.zeros(total, device=device)
        for k, p in enumerate(opt.params):
            view = slice(offsets[id(p)], offsets[id(p)] + p.numel())
            self.exp_avg[view].copy_(opt.exp_avg[k].flatten())
            self.exp_avg_sq[view].copy_(opt.exp_avg_sq[k].flatten())
            opt.exp_avg[k] = self.exp_avg[view].view_as(p)
            opt.exp_avg_sq[k] = self.exp_avg_sq[view].view_as(p)
        self.a_off = [offsets[id(x)] for layer in actor for x in (layer.weight, layer.bias)]
        self.c_off = [offsets[id(x)] for layer in critic for x in (layer.weight, layer.bias)]
        self.log_std_off = 0 if self.discrete else offsets[id(model.head.log_std)]
        self.n_obs = ppo.storage.obs.shape[-1]
        self.n_act = model.head.out_size
        self.minibatch = ppo.batch_size // c.num_minibatches
        self.steps = c.num_epochs * c.num_minibatches
        blocks = triton.cdiv(self.minibatch, ROWS)
        self.programs = min(blocks, MAX_PROGRAMS)
        self.n_chunks = triton.cdiv(total, CHUNK)
        self.partial = torch.zeros(self.programs, total, device=device)
        self.partial_stats = torch.zeros(self.programs, 5, device=device)
        self.grads = torch.zeros(total, device=device)
        self.sq = torch.zeros(self.n_chunks, device=device)
        self.stats = torch.zeros(self.steps, 5, device=device)
        self.adv_stats = torch.zeros(self.steps, 2, device=device)
        self.lr_spare = torch.zeros((), device=device)
        t, n = ppo.storage.rewards.shape
        self.advantages = torch.zeros(t, n, device=device)
        self.returns = torch.zeros(t, n, device=device)
        self.orders = torch.zeros(c.num_epochs, ppo.batch_size, dtype=torch.int64, device=device)
        self.last_values = torch.zeros(n, device=device)
        self.per_program = max(1024, triton.cdiv(n, 128))  # rows per part of the statistics
        self.moment_programs = triton.cdiv(n, self.per_program)
        self.moment_parts = torch.zeros(self.moment_programs, 2 * _pad(self.n_obs), device=device)

    def _forward_args(self) -> dict:
        c, model = self.ppo.config, self.ppo.model
        return dict(
            OBS=_pad(self.n_obs), HC1=c.critic_hidden[0], HC2=c.critic_hidden[1],
            ACT=ACTIVATIONS[c.activation], NORM=model.normalize, ROWS=FORWARD_ROWS,
            DOT=PRECISION, num_warps=FORWARD_WARPS,
        )  # fmt: skip

    def _obs(self, obs: torch.Tensor) -> torch.Tensor:
        return obs if obs.stride(-1) == 1 else obs.contiguous()

    def act(
        self, obs: torch.Tensor, noise: torch.Tensor, rows: tuple[torch.Tensor, ...]
    ) -> torch.Tensor:
        """PPO._policy_step in three kernels (the observation statistics' parts, their
        merge, the networks); returns the storage row of actions."""
        c, model = self.ppo.config, self.ppo.model
        obs = self._obs(obs)
        n = obs.shape[0]
        norm = model.obs_norm
        if model.normalize:
            _moments[(self.moment_programs,)](
                obs, obs.stride(0), self.moment_parts, n, self.n_obs, self.per_program,
                OBS=_pad(self.n_obs), ROWS=256,
            )  # fmt: skip
            _merge_moments[(1,)](
                self.moment_parts, norm.mean, norm.var, norm.count, n, float(n), self.n_obs,
                self.per_program, self.moment_programs, OBS=_pad(self.n_obs),
                NP=triton.next_power_of_2(self.moment_programs),
            )  # fmt: skip
        nobs, actions, log_probs, values = rows
        args = self._forward_args()
        _policy_step[(triton.cdiv(n, FORWARD_ROWS),)](
            obs, obs.stride(0), norm.mean, norm.var, noise, self.params,
            nobs, actions, log_probs, values, n, self.n_obs, self.n_act, norm.clip,
            *self.a_off, self.log_std_off, *self.c_off,
            HA1=c.actor_hidden[0], HA2=c.actor_hidden[1], ACTS=_pad(self.n_act),
            DISCRETE=self.discrete, **args,
        )  # fmt: skip
        return actions

    def values(self, obs: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The critic's values of obs [N, O] into ``out`` [N]."""
        obs = self._obs(obs)
        n = obs.shape[0]
        norm = self.ppo.model.obs_norm
        _values[(triton.cdiv(n, FORWARD_ROWS),)](
            obs, obs.stride(0), norm.mean, norm.var, self.params, out, n, self.n_obs,
            norm.clip, *self.c_off, **self._forward_args(),
        )  # fmt: skip
        return out

    def gae(self, last_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, s = self.ppo.config, self.ppo.storage
        t, n = s.rewards.shape
        block = 256
        _gae[(triton.cdiv(n, block),)](
            s.rewards, s.values, last_values, s.terminated, s.truncated, s.final_values,
            self.advantages, self.returns, t, n, c.gamma, c.gamma * c.gae_lambda, BLOCK=block,
        )  # fmt: skip
        return self.advantages, self.returns

    def update(self, advantages: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
        """Every minibatch step of one update; returns the [5] mean statistics."""
        ppo, c, s = self.ppo, self.ppo.config, self.ppo.storage
        for e in range(c.num_epochs):  # the eager update's draws, in its order
            perm = torch.randperm(ppo.batch_size, device=ppo.device, generator=ppo.generator)
            self.orders[e].copy_(perm)
        m, b = self.minibatch, ppo.batch_size
        mb_idx = [
            self.orders[e, j * m : (j + 1) * m]
            for e in range(c.num_epochs)
            for j in range(c.num_minibatches)
        ]
        if c.num_minibatches * m == b:  # one launch for all minibatches
            _advantage_stats[(self.steps,)](advantages, self.orders, self.adv_stats, m, ROWS=256)
        else:
            for j, idx in enumerate(mb_idx):
                _advantage_stats[(1,)](advantages, idx, self.adv_stats[j], m, ROWS=256)
        obs = s.obs.flatten(0, 1)
        actions = s.actions.flatten(0, 1)
        lr_slots = (ppo.lr, self.lr_spare)
        opt = ppo.optimizer
        act = ACTIVATIONS[c.activation]
        width = _pad(self.n_obs)
        for j, idx in enumerate(mb_idx):
            _minibatch_grads[(self.programs, 2)](
                obs, actions, s.log_probs, s.values, advantages, returns, idx,
                self.adv_stats[j], self.params, self.partial, self.partial_stats,
                m, self.n_obs, self.n_act, self.n_params,
                *self.a_off, self.log_std_off, *self.c_off,
                c.clip_coef, c.value_coef, c.entropy_coef,
                OBS=width, HA1=c.actor_hidden[0], HA2=c.actor_hidden[1],
                HC1=c.critic_hidden[0], HC2=c.critic_hidden[1], ACTS=_pad(self.n_act),
                ACT=act, DISCRETE=self.discrete, NORM_ADV=c.normalize_advantages,
                CLIP_VALUE=c.clip_value_loss, ROWS=ROWS, DOT=PRECISION, num_warps=WARPS,
            )  # fmt: skip
            lr, lr_next = lr_slots[j % 2], lr_slots[(j + 1) % 2]
            _reduce_grads[(self.n_chunks,)](
                self.partial, self.grads, self.sq, self.partial_stats, self.stats[j],
                opt.steps, lr, lr_next, self.n_params, self.programs, m, c.desired_kl,
                ADAPTIVE=c.lr_schedule == "adaptive", CHUNK=CHUNK, PARTS=REDUCE_PARTS,
            )  # fmt: skip
            _clip_adam[(self.n_chunks,)](
                self.params, self.grads, self.exp_avg, self.exp_avg_sq, self.sq, opt.steps, lr,
                self.n_params, self.n_chunks, c.max_grad_norm, opt.beta1, opt.beta2, opt.eps,
                CHUNK=CHUNK, NC=triton.next_power_of_2(self.n_chunks),
            )  # fmt: skip
        if len(mb_idx) % 2:
            ppo.lr.copy_(self.lr_spare)
        return self.stats.mean(0)
