"""What every entry point's `main` shares: the `--config` flag, one-paragraph errors,
quiet logs, and the runtime (seed, precision, tf.distribute strategy)."""

import contextlib
import logging
import os
import sys
import traceback

import keras
from absl import app, flags
from absl import logging as absl_logging
from ml_collections.config_flags import config_flags

import tfft
from experiments.config import UsageError, base_config, describe_configs, flatten, load_config, to_dict
from tfft.distribute import is_chief  # noqa: F401  (the entry points ask it)
from tfft.errors import OfflineError, did_you_mean

logger = logging.getLogger("tfft")


class ConfigParser(config_flags.ConfigFileFlagParser):
    """`config_flags`' file parser, plus JSON configs and one-line errors."""
    def parse(self, path):
        try:
            config = load_config(path)
        except UsageError as e:
            raise flags.IllegalFlagValueError(str(e)) from None
        if self._lock_config:
            config.lock()
        return config


def module_key(module_name):
    """absl files the flags of the program's main module under `sys.argv[0]` (what --help shows)."""
    return sys.argv[0] if module_name == "__main__" else module_name


def define_string_flag(name, default, help_text, *, module_name, required=False):
    """`flags.DEFINE_string` filed under the calling entry point (so that `--help` lists it)."""
    holder = flags.DEFINE_string(name, default, help_text, module_name=module_key(module_name))
    if required:
        flags.mark_flag_as_required(name)
    return holder


def define_config_flag(name="config", *, module_name, required=True, default=None):
    """Defines `--config` (locked, with `--config.<key>=` overrides), as the caller's flag."""
    help_text = (
        "The experiment: a config file in experiments/configs/ (its docstring is its command line), "
        "optionally with a variant, e.g. experiments/configs/flowers_resnet50.py:smoke; or a run's "
        "config.json / a tuning run's best_config.json. Any key can be overridden with "
        "--config.<key>=<value> (e.g. --config.batch_size=16 --config.data.path=DIR "
        "--config.overwrite=True); a misspelled key is refused."
    )
    help_text += "\nConfigs:\n" + describe_configs() + "\nKeys (see experiments/config.py, base_config): " + \
        ", ".join(flatten(to_dict(base_config())))
    flag = config_flags._ConfigFlag(  # the class config_flags.DEFINE_config_file builds
        parser=ConfigParser(name=name, lock_config=True), serializer=flags.ArgumentSerializer(), name=name,
        default=default, help_string=help_text, flag_values=flags.FLAGS,
    )
    holder = flags.DEFINE_flag(flag, flags.FLAGS, module_name=module_key(module_name))
    if required:
        flags.mark_flag_as_required(name)
    return holder


@contextlib.contextmanager
def runtime(config):
    """Seeds everything, sets the mixed-precision policy, and yields the tf.distribute strategy.

    The global dtype policy is restored on exit, so one process can run several configs.
    """
    policies = ("", "float32", "mixed_float16", "mixed_bfloat16")
    if config.mixed_precision not in policies:
        raise UsageError(f"config.mixed_precision={config.mixed_precision!r}; use one of {policies}.")
    previous = keras.mixed_precision.global_policy().name
    keras.utils.set_random_seed(int(config.seed))
    try:
        strategy = tfft.get_strategy(config.strategy)
    except ValueError as e:
        raise UsageError(str(e)) from None
    keras.mixed_precision.set_global_policy(config.mixed_precision or "float32")
    try:
        yield strategy
    finally:
        keras.mixed_precision.set_global_policy(previous)


def quiet_logs():
    """Entry points show tfft's own progress lines; its INFO logs only with --debug."""
    if not _debug():
        logging.getLogger("tfft").setLevel(logging.WARNING)
        absl_logging.set_verbosity(absl_logging.WARNING)


def define_debug_flag(module_name):
    """Defines `--debug` (full tracebacks) as a flag of the calling entry point."""
    flag = flags.BooleanFlag("debug", False, "Show full tracebacks on errors (also with TFFT_DEBUG=1).")
    flags.DEFINE_flag(flag, flags.FLAGS, module_name=module_key(module_name))


def _debug():
    try:
        return bool(flags.FLAGS.debug) or os.environ.get("TFFT_DEBUG") == "1"
    except (flags.UnparsedFlagAccessError, AttributeError):
        return os.environ.get("TFFT_DEBUG") == "1" or "--debug" in sys.argv


def _paragraph(text):
    return " ".join(str(text).split())


def fail(message, hint=None):
    """Prints `message` as one paragraph on stderr and exits with status 2."""
    text = _paragraph(message)
    if hint:
        text += " " + hint
    print(f"error: {text}", file=sys.stderr, flush=True)
    sys.exit(2)


def parse_flags(argv):
    """`app.run`'s flags parser with one-paragraph errors (exit status 2) instead of absl's."""
    program = os.path.basename(argv[0]) if argv else "experiments"
    command = program if program.startswith("tfft ") else f"python -m {_module_name(program)}"
    hint = f"Run `{command} --help` for the flags and config keys."
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(str(e), hint)
    except (AttributeError, KeyError) as e:  # ml_collections: an override of a key the config lacks
        fail(_unknown_override(argv, e), hint)


def _unknown_override(argv, error):
    """One sentence naming the `--config.<key>` overrides whose keys the config lacks."""
    spec = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")), None)
    overrides = [a.split("=", 1)[0][len("--config."):] for a in argv[1:] if a.startswith("--config.")]
    try:
        config = load_config(spec) if spec else base_config()
    except UsageError:
        config = base_config()
    problems = []
    for key in overrides:
        node, path = config, []
        for part in key.split("."):
            if not hasattr(node, "keys") or part not in node:
                where = ("config." + ".".join(path)) if path else "the config"
                hint = did_you_mean(part, list(node.keys())) if hasattr(node, "keys") else ""
                problems.append(f"--config.{key}: {where} has no key {part!r}.{hint}")
                break
            node, path = node[part], path + [part]
    if not problems:  # not an override after all: say what ml_collections said, on one line
        return " ".join(str(error).replace("\\n", " ").split())
    return " ".join(problems) + " Config files are locked so that a misspelled override fails."


def _module_name(program):
    name = os.path.splitext(program)[0]
    return f"experiments.{name}" if not name.startswith("experiments") else name


def start(argv, usage, fn, *args, **kwargs):
    """The body of every entry point's `main`: no stray arguments, quiet logs, one-paragraph errors."""
    if len(argv) > 1:
        fail(f"Unexpected arguments {argv[1:]}; flags look like {usage}.")
    quiet_logs()
    return guarded(fn, *args, **kwargs)


def launch(define_flags, main, argv=None):
    """Defines an entry point's flags and runs its `main` under absl with tfft's flag errors."""
    define_flags()
    app.run(main, argv=argv, flags_parser=parse_flags)


USER_ERRORS = (UsageError, ValueError, OSError)


def guarded(fn, *args, **kwargs):
    """Calls `fn`; errors a user can cause end the process with one paragraph (no traceback).

    Tracebacks are shown with `--debug` or `TFFT_DEBUG=1`.
    """
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        fail("Interrupted. A rerun with the same --workdir resumes where this run stopped.")
    except (OfflineError, *USER_ERRORS) as e:
        if _debug():
            raise
        logger.debug("%s", traceback.format_exc())
        if isinstance(e, UsageError):
            fail(str(e))
        fail(f"({type(e).__name__}) {e}", "Run with --debug (or TFFT_DEBUG=1) for the full traceback.")
