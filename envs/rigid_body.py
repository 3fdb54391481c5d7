"""Batched rigid-body dynamics of a serial chain of hinge joints, in torch.

The model comes from a MuJoCo XML file (a small subset, checked on load), so the tests can
hand the same file to MuJoCo as the reference. Everything is computed in the world frame:

- kinematics: body rotations R_i, joint origins o_i, joint axes z_i, centres of mass c_i;
- mass matrix M(q) by composite rigid bodies, plus the rotor armature on the diagonal;
- bias forces C(q, qd) qd + g(q) by recursive Newton-Euler with qdd = 0 and the base
  accelerating upward at g;
- MuJoCo's semi-implicit Euler: (M + h D) qdd = tau - bias - D qd + friction, then
  qd += h qdd, q += h qd.

Shapes: N envs, n joints (= bodies; body i carries joint i), all [N, ...] batched.
Joint friction is a smooth Coulomb law, -f tanh(qd / FRICTION_VELOCITY); joint limits are
hard stops (position clamped, the velocity into the stop removed).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.errors import ConfigError

FRICTION_VELOCITY = 0.1  # [rad/s] joint speed at which friction reaches tanh(1) of its level


@dataclass(frozen=True)
class ChainModel:
    """A serial chain read from MJCF; arrays are float64 on the host."""

    body_names: tuple[str, ...]
    joint_names: tuple[str, ...]
    body_pos: np.ndarray  # [n, 3] body origin in the parent frame
    body_rot: np.ndarray  # [n, 3, 3] parent -> body rotation at q = 0
    axis: np.ndarray  # [n, 3] unit joint axis in the body frame
    mass: np.ndarray  # [n]
    com: np.ndarray  # [n, 3] centre of mass in the body frame
    inertia: np.ndarray  # [n, 3, 3] about the centre of mass, body frame
    damping: np.ndarray  # [n] viscous [N m s/rad]
    armature: np.ndarray  # [n] rotor inertia [kg m^2]
    friction: np.ndarray  # [n] Coulomb friction level [N m]
    joint_range: np.ndarray  # [n, 2] [rad]; -inf/inf where unlimited
    gear: np.ndarray  # [n] torque per unit control [N m]
    ctrl_range: np.ndarray  # [n, 2]
    timestep: float  # [s]
    gravity: np.ndarray  # [3] [m/s^2]
    sites: dict[str, tuple[int, np.ndarray]]  # name -> (body index, position in body frame)

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)


def _floats(element: ET.Element, attr: str, default: str | None, n: int, where: str) -> np.ndarray:
    text = element.get(attr, default)
    if text is None:
        raise ConfigError(f"{where}: <{element.tag}> needs '{attr}'")
    try:
        values = np.array([float(v) for v in text.split()])
    except ValueError:
        raise ConfigError(f"{where}: <{element.tag} {attr}='{text}'> is not numbers") from None
    if values.size != n:
        raise ConfigError(f"{where}: <{element.tag} {attr}> needs {n} numbers, got '{text}'")
    return values


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


_PER_JOINT = (
    "body_pos", "body_rot", "axis", "mass", "com", "inertia", "damping", "armature", "friction",
    "joint_range",
)  # fmt: skip
_BODY_ATTRS = {"name", "pos", "quat"}
_JOINT_ATTRS = {
    "name", "type", "axis", "pos", "limited", "range", "damping", "armature", "frictionloss"
}  # fmt: skip


def load_chain(path: str | Path) -> ChainModel:
    """Read a serial hinge chain from an MJCF file (the subset vecbench simulates).

    Each body carries exactly one hinge joint at its origin and an explicit <inertial>;
    bodies nest one inside the other; actuators are <motor>s on those joints.
    """
    path = Path(path)
    where = str(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise ConfigError(f"{where}: model file not found") from None
    except ET.ParseError as err:
        raise ConfigError(f"{where}: not valid XML ({err})") from None
    if root.find("default") is not None:
        raise ConfigError(f"{where}: <default> classes are not supported; write attributes out")
    compiler = root.find("compiler")
    if compiler is None or compiler.get("angle") != "radian":
        raise ConfigError(f'{where}: needs <compiler angle="radian">')
    option = root.find("option")
    timestep = float(option.get("timestep", "0.002")) if option is not None else 0.002
    gravity = (
        _floats(option, "gravity", "0 0 -9.81", 3, where)
        if option is not None
        else np.array([0.0, 0.0, -9.81])
    )
    if option is not None and option.get("integrator", "Euler") != "Euler":
        raise ConfigError(f"{where}: only integrator='Euler' is simulated")

    bodies: list[ET.Element] = []
    parent = root.find("worldbody")
    if parent is None:
        raise ConfigError(f"{where}: no <worldbody>")
    while True:
        children = parent.findall("body")
        if not children:
            break
        if len(children) > 1:
            raise ConfigError(f"{where}: body '{parent.get('name')}' has several children; a chain")
        parent = children[0]
        bodies.append(parent)
    if not bodies:
        raise ConfigError(f"{where}: no bodies")

    fields: dict[str, list] = {k: [] for k in ("body_names", "joint_names", *_PER_JOINT)}
    sites: dict[str, tuple[int, np.ndarray]] = {}
    for i, body in enumerate(bodies):
        name = body.get("name", f"body{i}")
        here = f"{where}: body '{name}'"
        extra = set(body.attrib) - _BODY_ATTRS
        if extra:
            raise ConfigError(f"{here}: attribute '{sorted(extra)[0]}' is not supported")
        joints = body.findall("joint")
        if len(joints) != 1 or joints[0].get("type", "hinge") != "hinge":
            raise ConfigError(f"{here}: needs exactly one hinge <joint>")
        joint = joints[0]
        extra = set(joint.attrib) - _JOINT_ATTRS
        if extra:
            raise ConfigError(f"{here}: joint attribute '{sorted(extra)[0]}' is not supported")
        if np.any(_floats(joint, "pos", "0 0 0", 3, here) != 0):
            raise ConfigError(f"{here}: the joint must sit at the body origin (pos='0 0 0')")
        inertial = body.find("inertial")
        if inertial is None:
            raise ConfigError(f"{here}: needs an explicit <inertial>")
        axis = _floats(joint, "axis", "0 0 1", 3, here)
        fields["body_names"].append(name)
        fields["joint_names"].append(joint.get("name", f"joint{i}"))
        fields["body_pos"].append(_floats(body, "pos", "0 0 0", 3, here))
        fields["body_rot"].append(_quat_to_matrix(_floats(body, "quat", "1 0 0 0", 4, here)))
        fields["axis"].append(axis / np.linalg.norm(axis))
        fields["mass"].append(float(_floats(inertial, "mass", None, 1, here)[0]))
        fields["com"].append(_floats(inertial, "pos", None, 3, here))
        if inertial.get("fullinertia") is not None:
            xx, yy, zz, xy, xz, yz = _floats(inertial, "fullinertia", None, 6, here)
            inertia = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
        else:
            rot = _quat_to_matrix(_floats(inertial, "quat", "1 0 0 0", 4, here))
            inertia = rot @ np.diag(_floats(inertial, "diaginertia", None, 3, here)) @ rot.T
        fields["inertia"].append(inertia)
        for attr in ("damping", "armature", "frictionloss"):
            key = "friction" if attr == "frictionloss" else attr
            fields[key].append(float(_floats(joint, attr, "0", 1, here)[0]))
        limited = joint.get("limited", "true" if joint.get("range") else "false") == "true"
        fields["joint_range"].append(
            _floats(joint, "range", None, 2, here) if limited else np.array([-np.inf, np.inf])
        )
        for site in body.findall("site"):
            sites[site.get("name", f"site{len(sites)}")] = (
                i,
                _floats(site, "pos", "0 0 0", 3, here),
            )

    joint_index = {name: i for i, name in enumerate(fields["joint_names"])}
    gear = np.zeros(len(bodies))
    ctrl = np.tile([-np.inf, np.inf], (len(bodies), 1))
    actuator = root.find("actuator")
    for motor in [] if actuator is None else list(actuator):
        if motor.tag != "motor" or motor.get("joint") not in joint_index:
            raise ConfigError(f"{where}: actuators must be <motor joint=...> on the chain's joints")
        j = joint_index[motor.get("joint")]
        gear[j] = float(_floats(motor, "gear", "1", 1, where)[0])
        if motor.get("ctrllimited", "true" if motor.get("ctrlrange") else "false") == "true":
            ctrl[j] = _floats(motor, "ctrlrange", None, 2, where)
    return ChainModel(
        body_names=tuple(fields["body_names"]),
        joint_names=tuple(fields["joint_names"]),
        **{k: np.array(fields[k]) for k in _PER_JOINT},
        gear=gear,
        ctrl_range=ctrl,
        timestep=timestep,
        gravity=gravity,
        sites=sites,
    )


@dataclass(frozen=True)
class Kinematics:
    """World-frame placement of every body at a batch of joint positions."""

    rot: torch.Tensor  # [N, n, 3, 3] body -> world
    origin: torch.Tensor  # [N, n, 3] body origins (= joint positions)
    axis: torch.Tensor  # [N, n, 3] joint axes
    com: torch.Tensor  # [N, n, 3] centres of mass


@dataclass(frozen=True)
class Scales:
    """Per-env multipliers of the model, each [N]: ``mass`` of every link's mass and
    inertia (same shape, denser material), ``damping`` and ``friction`` of the joints'."""

    mass: torch.Tensor
    damping: torch.Tensor
    friction: torch.Tensor

    @staticmethod
    def nominal(n: int, dtype: torch.dtype, device: torch.device | None = None) -> Scales:
        ones = torch.ones(n, dtype=dtype, device=device)
        return Scales(ones, ones, ones)


class ChainDynamics:
    """The chain's model as tensors on one device and dtype, with batched dynamics."""

    def __init__(self, model: ChainModel, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model
        self.n = model.num_joints
        self.h = model.timestep

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=dtype, device=device)

        self.body_pos = t(model.body_pos)  # [n, 3]
        axis = model.axis
        skew = np.zeros((self.n, 3, 3))
        skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
        skew = skew - skew.transpose(0, 2, 1)
        # R_parent->body(q) = B (I + sin q K + (1 - cos q) K^2) for body rotation B, K = [axis]x
        self.rot_0 = t(model.body_rot)  # [n, 3, 3]
        self.rot_sin = t(model.body_rot @ skew)
        self.rot_cos = t(model.body_rot @ skew @ skew)
        self.axis = t(axis)  # [n, 3]
        self.mass = t(model.mass)  # [n]
        self.com = t(model.com)  # [n, 3]
        self.inertia = t(model.inertia)  # [n, 3, 3]
        self.damping = t(model.damping)  # [n]
        self.armature = t(model.armature)  # [n]
        self.friction = t(model.friction)  # [n]
        self.q_low = t(model.joint_range[:, 0])  # [n]
        self.q_high = t(model.joint_range[:, 1])  # [n]
        self.gravity = t(model.gravity)  # [3]
        self.sites = {name: (body, t(pos)) for name, (body, pos) in model.sites.items()}

    def kinematics(self, q: torch.Tensor) -> Kinematics:
        """q [N, n] -> world placement of every body."""
        sin, cos = torch.sin(q), torch.cos(q)  # [N, n]
        local = (
            self.rot_0
            + sin[..., None, None] * self.rot_sin
            + (1.0 - cos)[..., None, None] * self.rot_cos
        )  # [N, n, 3, 3] parent -> body
        rot, origin = [], []
        r_parent = None
        o_parent = torch.zeros_like(q[:, :3])  # [N, 3] world origin
        for i in range(self.n):
            if r_parent is None:
                o = o_parent + self.body_pos[i]
                r = local[:, i].expand(q.shape[0], 3, 3)
            else:
                o = o_parent + _matvec(r_parent, self.body_pos[i])
                r = _matmul(r_parent, local[:, i])
            rot.append(r)
            origin.append(o)
            r_parent, o_parent = r, o
        rot_t = torch.stack(rot, 1)  # [N, n, 3, 3]
        origin_t = torch.stack(origin, 1)  # [N, n, 3]
        axis = _matvec(rot_t, self.axis)  # [N, n, 3]
        com = origin_t + _matvec(rot_t, self.com)
        return Kinematics(rot_t, origin_t, axis, com)

    def site(self, kin: Kinematics, name: str) -> torch.Tensor:
        """[N, 3] world position of a site."""
        body, local = self.sites[name]
        return kin.origin[:, body] + _matvec(kin.rot[:, body], local)

    def _bodies(
        self, kin: Kinematics, mass_scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mass [N, n], inertia about each centre of mass in the world frame [N, n, 3, 3])."""
        inertia = _matmul(_matmul(kin.rot, self.inertia), kin.rot.transpose(-1, -2))
        return self.mass * mass_scale[:, None], inertia * mass_scale[:, None, None, None]

    def mass_matrix(self, kin: Kinematics, mass_scale: torch.Tensor) -> torch.Tensor:
        """[N, n, n] joint-space inertia (composite rigid bodies), armature included.

        M[j, l] for j <= l is joint j's share of the wrench that a unit acceleration of
        joint l needs to move the bodies from l outward (the subtree of l, as one rigid
        body: summed mass, first moment and inertia about the world origin).
        """
        z, o, c = kin.axis, kin.origin, kin.com
        mass, inertia = self._bodies(kin, mass_scale)
        eye = torch.eye(3, dtype=z.dtype, device=z.device)
        # Each body's inertia about the world origin (parallel-axis theorem).
        shift = (c * c).sum(-1)[..., None, None] * eye - c[..., :, None] * c[..., None, :]
        inertia_o = _suffix_sum(inertia + mass[..., None, None] * shift)  # [N, n, 3, 3]
        mass_sub = _suffix_sum(mass)[..., None]  # [N, n, 1]
        moment_sub = _suffix_sum(mass[..., None] * c)  # [N, n, 3] sum m c
        # Unit acceleration of joint l: the force and the moment about the world origin.
        torque_o = _matvec(inertia_o, z) - _cross(moment_sub, _cross(z, o))
        force = _cross(z, moment_sub - mass_sub * o)
        # Moment about o_j, projected on z_j: z_j . (torque_o - o_j x force).
        a = _dots(z, torque_o) - _dots(_cross(z, o), force)  # [N, j, l]
        return torch.triu(a) + torch.triu(a, 1).transpose(1, 2) + torch.diag(self.armature)

    def bias(self, kin: Kinematics, qd: torch.Tensor, mass_scale: torch.Tensor) -> torch.Tensor:
        """[N, n] C(q, qd) qd + g(q): recursive Newton-Euler with qdd = 0, each recursion
        written as a prefix or suffix sum over the chain."""
        z, o, c = kin.axis, kin.origin, kin.com
        mass, inertia = self._bodies(kin, mass_scale)
        spin = z * qd[..., None]  # [N, n, 3]
        omega = spin.cumsum(1)  # body angular velocities
        omega_parent = omega - spin
        alpha_step = _cross(omega_parent, spin)
        alpha = alpha_step.cumsum(1)  # body angular accelerations
        alpha_parent = alpha - alpha_step
        # Joint origin accelerations, the base accelerating upward against gravity.
        r = o - torch.cat([torch.zeros_like(o[:, :1]), o[:, :-1]], 1)
        step = _cross(alpha_parent, r) + _cross(omega_parent, _cross(omega_parent, r))
        acc = step.cumsum(1) - self.gravity
        d = c - o
        acc_com = acc + _cross(alpha, d) + _cross(omega, _cross(omega, d))
        force = mass[..., None] * acc_com  # [N, n, 3]
        spin_moment = _matvec(inertia, alpha) + _cross(omega, _matvec(inertia, omega))
        # Moment about o_i of bodies i.. outward: about the world origin, then shifted.
        moment = _suffix_sum(spin_moment + _cross(c, force)) - _cross(o, _suffix_sum(force))
        return (z * moment).sum(-1)

    def passive(self, qd: torch.Tensor, scales: Scales) -> tuple[torch.Tensor, torch.Tensor]:
        """(damping [N, n], friction torque [N, n])."""
        damping = self.damping * scales.damping[:, None]
        friction = -self.friction * scales.friction[:, None] * torch.tanh(qd / FRICTION_VELOCITY)
        return damping, friction

    def acceleration(
        self,
        q: torch.Tensor,
        qd: torch.Tensor,
        tau: torch.Tensor,
        scales: Scales,
        implicit_damping: float = 0.0,
    ) -> torch.Tensor:
        """qdd [N, n] for joint torques tau [N, n]; with ``implicit_damping`` h the damping
        is taken implicitly over a step of h (MuJoCo's Euler integrator)."""
        kin = self.kinematics(q)
        m = self.mass_matrix(kin, scales.mass)
        damping, friction = self.passive(qd, scales)
        force = tau - self.bias(kin, qd, scales.mass) - damping * qd + friction
        if implicit_damping:
            m = m + torch.diag_embed(implicit_damping * damping)
        if q.device.type == "cuda":
            return _small_spd_solve(m, force)
        chol, _ = torch.linalg.cholesky_ex(m)
        return torch.cholesky_solve(force[..., None], chol).squeeze(-1)

    def step(
        self, q: torch.Tensor, qd: torch.Tensor, tau: torch.Tensor, scales: Scales
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One physics step of ``timestep``: semi-implicit Euler, then the joint stops."""
        qdd = self.acceleration(q, qd, tau, scales, implicit_damping=self.h)
        qd = qd + self.h * qdd
        q = q + self.h * qd
        below, above = q < self.q_low, q > self.q_high
        q = torch.clamp(q, self.q_low, self.q_high)
        into_stop = (below & (qd < 0)) | (above & (qd > 0))
        return q, torch.where(into_stop, torch.zeros_like(qd), qd)


# Small products. On CUDA they are written as broadcasts and sums: elementwise work that
# torch.compile fuses, where batched 3x3 matmuls would each be a library call on tiny
# matrices. On CPU the library calls are faster.


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a x b over the last dim (3)."""
    if not a.is_cuda:
        return torch.linalg.cross(a, b, dim=-1)
    a0, a1, a2 = a.unbind(-1)
    b0, b1, b2 = b.unbind(-1)
    return torch.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], -1)


def _matvec(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] @ [..., 3] -> [..., 3]."""
    if not m.is_cuda:
        return (m @ v[..., None]).squeeze(-1)
    return (m * v[..., None, :]).sum(-1)


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] @ [..., 3, 3] -> [..., 3, 3]."""
    if not a.is_cuda:
        return a @ b
    return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)


def _dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N, j, 3], [N, l, 3] -> [N, j, l] of a_j . b_l."""
    if not a.is_cuda:
        return a @ b.transpose(1, 2)
    return (a[:, :, None, :] * b[:, None, :, :]).sum(-1)


def _suffix_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over bodies i and outward, along dim 1."""
    return x.flip(1).cumsum(1).flip(1)


def _small_spd_solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x [N, n] with a x = b for SPD a [N, n, n], by a Cholesky factorisation unrolled
    over the n joints: elementwise ops only, so no solver library call (whose batched CUDA
    kernels synchronise with the host) and one fused kernel under torch.compile."""
    n = a.shape[-1]
    low: dict[tuple[int, int], torch.Tensor] = {}
    for j in range(n):
        diag = a[:, j, j] - sum((low[j, k] ** 2 for k in range(j)), torch.zeros_like(b[:, 0]))
        low[j, j] = torch.sqrt(diag)
        for i in range(j + 1, n):
            off = a[:, i, j] - sum(
                (low[i, k] * low[j, k] for k in range(j)), torch.zeros_like(b[:, 0])
            )
            low[i, j] = off / low[j, j]
    y: list[torch.Tensor] = []
    for i in range(n):  # L y = b
        y.append((b[:, i] - sum((low[i, k] * y[k] for k in range(i)), 0.0)) / low[i, i])
    x: dict[int, torch.Tensor] = {}
    for i in reversed(range(n)):  # L^T x = y
        x[i] = (y[i] - sum((low[k, i] * x[k] for k in range(i + 1, n)), 0.0)) / low[i, i]
    return torch.stack([x[i] for i in range(n)], 1)
