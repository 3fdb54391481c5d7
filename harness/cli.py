"""The ``vecbench`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import typing
from pathlib import Path

from harness.errors import VecbenchError, one_line


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line, as every other error is (subcommands inherit this)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed
        return done.code if isinstance(done.code, int) else 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except VecbenchError as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`vecbench study status | head`)
        return 0
    except OSError as err:  # a file-system fault no layer below named: still one line
        where = f"{err.filename}: " if err.filename else ""
        reason = err.strerror or str(err)
        print(
            f"error: {one_line(f'{where}{reason}')}; check the path and free space", file=sys.stderr
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished results and the last checkpoint are kept", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vecbench", description=__doc__)
    parser.add_argument(
        "--version", action=_Version, nargs=0, help="print vecbench's version and git commit"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    config = sub.add_parser("config", help="the resolved run config")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser(
        "show", help="print the config a run would get (defaults <- --config <- --set) as YAML"
    )
    show.add_argument("--config", type=Path, help="YAML file overriding the defaults")
    _add_set(show, "override config values, e.g. algo.lr=1e-3")
    show.set_defaults(func=_config_show)
    keys = config_sub.add_parser("keys", help="every config key: type, default, meaning")
    keys.set_defaults(func=_config_keys)

    train = sub.add_parser("train", help="train one run (PPO on cartpole by default)")
    train.add_argument("--config", type=Path, help="YAML file overriding the defaults")
    _add_set(train, "override config values, e.g. algo.lr=1e-3 env.num_envs=4096")
    train.add_argument("--device", help="auto, cpu, cuda or cuda:K (experiment.device)")
    train.add_argument("--wandb", choices=["offline", "online", "disabled"], help="W&B mode")
    train.add_argument("--run-dir", type=Path, help="where to write the run (default: runs/...)")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue this run")
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="mean return of a trained run's checkpoint, or a video")
    ev.add_argument("run_dir", type=Path)
    ev.add_argument("--episodes", type=int, default=100)
    ev.add_argument("--stochastic", action="store_true", help="sample actions, not the mode")
    ev.add_argument("--device", help="device to evaluate on (default: the run's)")
    ev.add_argument(
        "--video", type=Path, metavar="OUT", help="record the greedy policy: out.gif or out.mp4"
    )
    ev.add_argument("--video-envs", type=int, default=4, help="envs tiled in each frame")
    ev.add_argument("--video-steps", type=int, default=300, help="frames (env steps)")
    _add_set(ev, "change the env, e.g. a wider randomisation range")
    ev.set_defaults(func=_eval)

    export = sub.add_parser(
        "export", help="a run's greedy policy as ONNX, TorchScript or torch.export (.pt2)"
    )
    export.add_argument("run_dir", type=Path)
    export.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="policy.onnx (ONNX), policy.pt (TorchScript) or policy.pt2 (torch.export)",
    )
    export.set_defaults(func=_export)

    bench = sub.add_parser("bench", help="throughput: env-only, env + inference, training")
    bench.add_argument("--config", type=Path, help="YAML file overriding the defaults")
    _add_set(bench, "override config values")
    bench.add_argument("--device", help="auto, cpu, cuda or cuda:K")
    bench.add_argument("--num-envs", type=int, nargs="+", default=[256, 1024, 4096])
    bench.add_argument(
        "--modes",
        nargs="+",
        choices=["env", "inference", "train", "launch"],
        default=["env", "inference", "train"],
        help="launch: a fresh `vecbench train` process, timed from start to exit at "
        "--threshold (W&B off)",
    )
    bench.add_argument("--threshold", type=float, default=475.0, help="mean return for launch")
    bench.add_argument("--steps", type=int, default=200, help="timed env steps per figure")
    bench.add_argument("--train-iterations", type=int, default=20)
    bench.add_argument(
        "--repeats",
        type=int,
        help="measurements per figure; the median is reported with the min and max "
        "(default: 5 on CUDA, 1 on CPU)",
    )
    bench.add_argument("-o", "--output", type=Path, help="write OUTPUT.json and OUTPUT.csv")
    bench.set_defaults(func=_bench)

    report = sub.add_parser("report", help="HTML + Markdown report from runs, studies, benches")
    report.add_argument(
        "inputs",
        type=Path,
        nargs="*",
        help="run dirs, study dirs or bench JSON (searched recursively)",
    )
    report.add_argument("-o", "--output", type=Path, required=True, help="report directory")
    report.add_argument(
        "--storage", help="storage of studies to include: a database URL or a journal file"
    )
    report.add_argument(
        "--study",
        dest="studies",
        nargs="+",
        default=[],
        help="study names in --storage (default: all)",
    )
    report.add_argument("--threshold", type=float, help="return for the time-to-threshold table")
    report.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    report.add_argument("--title", default="vecbench report")
    report.set_defaults(func=_report)

    study = sub.add_parser("study", help="Optuna studies: run, resume, status")
    study_sub = study.add_subparsers(dest="study_command", required=True)
    run = study_sub.add_parser("run", help="run a study file; running it again resumes it")
    run.add_argument("study", type=Path, help="study YAML (see studies/*.yaml)")
    run.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    run.add_argument(
        "--storage",
        help="database URL shared by many machines (default: journal "
        "file in the study directory), e.g. postgresql://user:pw@host/db",
    )
    run.add_argument(
        "--gpus", nargs="+", metavar="ID", help="pin workers to these GPUs, one per worker in turn"
    )
    run.add_argument(
        "--batch-trials",
        type=int,
        metavar="K",
        help="trials a worker trains together as one batched program (the study file's "
        "batch_trials)",
    )
    run.set_defaults(func=_study_run)
    status = study_sub.add_parser("status", help="trials, their state and values, the best")
    status.add_argument("study", type=Path)
    status.add_argument("--storage")
    status.set_defaults(func=_study_status)
    dashboard = study_sub.add_parser("dashboard", help="optuna-dashboard on the study's storage")
    dashboard.add_argument("study", type=Path)
    dashboard.add_argument("--storage")
    dashboard.add_argument("--port", type=int, default=8080, help="on 127.0.0.1 (default 8080)")
    dashboard.set_defaults(func=_study_dashboard)
    return parser


class _Version(argparse.Action):
    """--version: the installed version and the checkout's commit (looked up only when asked)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        from harness.tracking import git_commit

        try:
            installed = version("vecbench")
        except PackageNotFoundError:
            installed = "(not installed)"
        commit = git_commit()
        print(f"vecbench {installed} (commit {commit[:12] if commit else 'unknown'})")
        parser.exit()


def _config_show(args: argparse.Namespace) -> int:
    import yaml

    from harness.config import load_config, to_dict

    config = load_config(args.config, args.overrides)
    print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
    return 0


def _config_keys(args: argparse.Namespace) -> int:
    from harness.keys import keys_text

    print(keys_text())
    return 0


def _add_set(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help=help + " (repeated --set options add up)",
    )


def _overrides(args: argparse.Namespace) -> list[str]:
    """--set values, plus --device and --wandb where the command has them."""
    overrides = list(args.overrides)
    if getattr(args, "device", None) is not None:  # "" too: a mistake, not the default
        from harness.config import DEVICE_NAMES
        from harness.errors import ConfigError, shown

        if not DEVICE_NAMES.fullmatch(args.device):
            raise ConfigError(
                f"--device must be auto, cpu, cuda or cuda:K, got {shown(args.device)}"
            )
        overrides.append(f"experiment.device={args.device}")
    if getattr(args, "wandb", None):
        overrides.append(f"tracking.wandb={args.wandb}")
    return overrides


def _train(args: argparse.Namespace) -> int:
    from harness import runner
    from harness.config import load_config

    overrides = _overrides(args)
    if args.resume is not None:
        if args.config is not None or args.run_dir is not None:
            raise VecbenchError(
                "--resume takes its config and directory from the run; "
                "drop --config/--run-dir (use --set to change values)"
            )
        result = runner.resume(args.resume, overrides)
    else:
        result = runner.train(load_config(args.config, overrides), run_dir=args.run_dir)
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 reports for the run
    print(
        f"final mean return {result.final_return:.1f} (best {result.best_return:.1f}) after "
        f"{result.env_steps:,} env steps in {result.wall_time_s:.1f} s "
        f"({result.env_steps_per_second:,.0f} steps/s)\nresults: {result.run_dir}"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from harness.evaluate import evaluate, record_eval

    if args.video is not None:
        from harness.video import record_video

        frames = record_video(
            args.run_dir,
            args.video,
            args.video_envs,
            args.video_steps,
            args.device,
            args.overrides,
        )
        print(f"video of {args.video_envs} envs, {frames} frames: {args.video}")
        return 0
    if args.episodes <= 0:
        raise VecbenchError(f"--episodes must be > 0, got {args.episodes}")
    result = evaluate(args.run_dir, args.episodes, not args.stochastic, args.device, args.overrides)
    print(
        f"mean return {result.mean_return:.1f} +- {result.std_return:.1f} "
        f"(mean length {result.mean_length:.1f}) over {result.episodes} episodes"
        + "".join(f", {name} {value:.3f}" for name, value in result.metrics.items())
    )
    record_eval(args.run_dir, result, not args.stochastic, args.overrides)
    print(f"written to {args.run_dir / 'eval.json'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from harness.export import export_policy

    kind = export_policy(args.run_dir, args.output)
    print(f"{kind} policy written to {args.output} (input obs [B, O] float32, output actions)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from reports.render import write_report

    if not args.inputs and not args.storage:
        raise VecbenchError("report: give run/study directories or --storage with --study")
    if args.reps <= 0:
        raise VecbenchError(f"--reps must be > 0, got {args.reps}")
    if args.output.exists() and not args.output.is_dir():
        raise VecbenchError(f"{args.output}: -o names an existing file; give a directory")
    page = write_report(
        args.inputs, args.output, args.storage, args.studies, args.threshold, args.reps, args.title
    )
    print(f"report: {page} (and report.md, figures/, tables/ beside it)")
    return 0


def _study_run(args: argparse.Namespace) -> int:
    from studies.run import StudyFailedError, run_study, study_status
    from studies.spec import load_study

    loaded = load_study(args.study)
    try:
        run_study(loaded, args.workers, args.storage, args.gpus, args.batch_trials)
    except StudyFailedError:
        print(study_status(loaded, args.storage))  # the table, then the one-line error
        raise
    print(study_status(loaded, args.storage))
    print(f"results: {loaded.study_dir}")
    return 0


def _study_status(args: argparse.Namespace) -> int:
    from studies.run import study_status
    from studies.spec import load_study

    print(study_status(load_study(args.study), args.storage))
    return 0


def _study_dashboard(args: argparse.Namespace) -> int:
    from studies.run import serve_dashboard
    from studies.spec import load_study

    if not 0 < args.port < 65536:
        raise VecbenchError(f"--port must be in 1..65535, got {args.port}")
    serve_dashboard(load_study(args.study), args.storage, port=args.port)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from harness.bench import format_table, log_bench, run_bench, write_results
    from harness.config import load_config

    if any(n <= 0 for n in args.num_envs) or args.steps <= 0 or args.train_iterations <= 0:
        raise VecbenchError("--num-envs, --steps and --train-iterations must be > 0")
    config = load_config(args.config, _overrides(args))
    repeats = args.repeats
    if repeats is None:  # a GPU's figures vary by more than 5 % from one measurement to the next
        from harness.device import resolve_device

        repeats = 5 if resolve_device(config.experiment.device).type == "cuda" else 1
    rows = run_bench(
        config,
        args.num_envs,
        tuple(args.modes),
        args.steps,
        args.train_iterations,
        args.threshold,
        repeats,
        # each row saved as it comes: a benchmark stopped part-way keeps what it measured
        None if args.output is None else lambda rows: write_results(rows, args.output),
    )
    print(format_table(rows))
    settings = {
        "num_envs": list(args.num_envs),
        "modes": list(args.modes),
        "steps": args.steps,
        "train_iterations": args.train_iterations,
        "repeats": repeats,
        "output": str(args.output) if args.output is not None else None,
    }
    folder = args.output.parent if args.output is not None else Path("runs") / "bench"
    if log_bench(config, rows, folder, settings):
        print(f"W&B ({config.tracking.wandb}): bench run in {folder / 'wandb'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
