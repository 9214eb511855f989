"""What every keras_vit command shares: its parser, its flags' readers and its one-line error report."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Callable


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default (where it has one worth showing) and keeps the description's line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS or "default" in help_text:
            return help_text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            default = action.default
            shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
            return f"{help_text} (default: {shown})"
        return help_text


def command_parser(prog: str, doc: str, verbose: bool = True) -> argparse.ArgumentParser:
    """A parser whose description is the first paragraph of `doc` and whose epilog is the rest.

    `prog` is how the README runs it (`python -m keras_vit.training.train`), unless
    it was started as its console script (`keras-vit-train`). With `verbose`,
    it has the --verbose flag (a command with sub-commands gives it to each
    of them instead, with `add_verbose_flag`).
    """
    script = os.path.basename(sys.argv[0])
    prog = script if script.startswith("keras-vit-") else prog
    description, _, epilog = doc.strip().partition("\n\n")
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog or None, formatter_class=HelpFormatter)
    if verbose:
        add_verbose_flag(parser)
    return parser


def warn_checkout_name(package: str) -> None:
    """Warns that `python -m training.X` (or `serving.X`) in a checkout is a deprecated name of `keras_vit.<package>.X`."""
    warnings.warn(
        f"`python -m {package}.X` is deprecated and goes in 0.4: the module is keras_vit.{package}.X "
        f"(`python -m keras_vit.{package}.X`, or its keras-vit-* console script).",
        FutureWarning,
        stacklevel=3,
    )


#: The Keras backends a command can run on (`--backend`).
BACKENDS = ("tensorflow", "jax", "torch")


def add_backend_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS,
                        help="the Keras backend (default: KERAS_BACKEND, else tensorflow); tf.data, tf.distribute and "
                             "SavedModel export stay TensorFlow's")


def use_backend(name: str | None) -> None:
    """Runs this command again, at once, under `KERAS_BACKEND=name` when Keras was imported with another backend.

    Keras reads its backend once, when it is imported, and `import keras_vit` imports it before any flag is read;
    the process is replaced (same interpreter, same arguments), so nothing of the first start remains.
    """
    import keras

    if name is None or name == keras.backend.backend():
        return
    if not any(arg == "--backend" or arg.startswith("--backend=") for arg in sys.argv[1:]):  # called, not started
        raise ValueError(f"Keras runs on {keras.backend.backend()} in this process: its backend is read when it is "
                         f"imported, so set KERAS_BACKEND={name} before importing keras_vit.")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, dict(os.environ, KERAS_BACKEND=name))


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """`--verbose`, kept so that scripts passing it still run: it has had no effect since 0.3 (a warning says so)."""
    parser.add_argument("--verbose", action=_NoLongerVerbose, nargs=0, help=argparse.SUPPRESS)


class _NoLongerVerbose(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None) -> None:
        warnings.warn(
            "--verbose is deprecated and has no effect: TensorFlow starts at `import keras_vit`, before the flags are "
            "read (TF_CPP_MIN_LOG_LEVEL=0 shows all of its log lines).",
            FutureWarning,
            stacklevel=2,
        )


def add_image_size_flag(parser: argparse.ArgumentParser, flag: str = "--image_size", **options) -> None:
    """A flag of one size or a height and a width (`image_size_of` reads it)."""
    parser.add_argument(flag, type=int, nargs="+", metavar=("SIZE", "WIDTH"), **options)


def image_size_of(values: list[int] | None, flag: str = "--image_size") -> tuple[int, int] | None:
    """(h, w) from such a flag's values (one size: square), None when not given; ValueError for more than two."""
    if values is None:
        return None
    if len(values) > 2:
        raise ValueError(f"{flag} takes one size or a height and a width, got {len(values)} numbers.")
    return (values[0], values[-1])


def check_files(**flags) -> None:
    """ValueError naming the first flag whose file is missing (`check_files(labels=args.labels, image=args.image)`).

    Values may be None (not given), a path, or a list of paths. Commands call
    this before TensorFlow starts, so a mistyped path is answered at once.
    """
    for flag, value in flags.items():
        for path in [value] if isinstance(value, str) else value or []:
            if not os.path.exists(path):
                raise ValueError(f"--{flag} {path}: no such file.")


def report_errors(work: Callable[[], object], errors: tuple[type[Exception], ...] = (ValueError, OSError, ImportError)) -> int:
    """Runs `work`: 0, or for an expected failure one `error:` line on stderr and exit status 2 (never a traceback)."""
    try:
        work()
    except errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
