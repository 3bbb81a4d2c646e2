"""Distributed tuning with KerasTuner's chief / worker protocol: checked, served, launched.

Run the same tuning script once per process with the same `directory` (a shared file
system) and `KERASTUNER_TUNER_ID` (`chief`, `tuner0`, `tuner1`, ...),
`KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT`: the chief serves the oracle and runs no
trial; each worker asks it for trials until none is left; every process exits by itself.
`launch_local` does that on one machine (one worker per GPU with `gpus_per_worker=1`).

Before anything starts, `check_distributed_env` refuses variables that do not fit together,
a chief refuses a port that is in use and a project folder that another chief serves
(`ChiefLock`), and a worker waits at most `TFFT_CHIEF_TIMEOUT` seconds (default 15) for its
chief to answer: each ends with one sentence instead of hanging.
"""

import fcntl
import os
import socket
import subprocess
import time
from concurrent import futures

from tfft import net

CHIEF_TIMEOUT = 15.0  # seconds a worker waits for its chief to answer (TFFT_CHIEF_TIMEOUT)
RPC_TIMEOUT = 600  # seconds a worker waits for one answer of a running chief (KerasTuner's is an hour)
LOCK_FILE = "tfft_chief.lock"
_HELD = {}  # lock path -> open file, for this process's lifetime


def role():
    """`"chief"`, `"worker"` or `"single"`: this process's part in a KerasTuner search."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def check_distributed_env():
    """Checks the `KERASTUNER_*` variables; on a worker, waits for the chief. Returns `role()`.

    Raises:
        ValueError: one sentence naming what is missing, or that no chief answers.
    """
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID")
    ip, port = os.environ.get("KERASTUNER_ORACLE_IP"), os.environ.get("KERASTUNER_ORACLE_PORT")
    if tuner_id and not ip:
        raise ValueError(
            f"KERASTUNER_TUNER_ID={tuner_id} is set but KERASTUNER_ORACLE_IP is not: a distributed search needs "
            "the chief's address on every process (KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT); unset "
            "KERASTUNER_TUNER_ID to search in this process alone.")
    if ip and (not port or not tuner_id):
        missing = " and ".join(n for n, v in (("KERASTUNER_ORACLE_PORT", port), ("KERASTUNER_TUNER_ID", tuner_id))
                               if not v)
        verb = "are" if " and " in missing else "is"
        raise ValueError(f"KERASTUNER_ORACLE_IP={ip} is set but {missing} {verb} not: set them on every process "
                         "(the chief's port, and chief / tuner0 / tuner1 / ... as the id).")
    if ip and not str(port).isdigit():
        raise ValueError(f"KERASTUNER_ORACLE_PORT={port!r} is not a port number.")
    current = role()
    if current == "worker":
        wait_for_chief(ip, int(port), float(os.environ.get("TFFT_CHIEF_TIMEOUT", CHIEF_TIMEOUT)))
        from keras_tuner.src.distribute import oracle_client  # private: see BUILD_NOTES, "Private APIs"

        oracle_client.TIMEOUT = int(os.environ.get("TFFT_ORACLE_RPC_TIMEOUT", RPC_TIMEOUT))
    elif current == "chief":
        check_port_free(ip, int(port))
    return current


def wait_for_chief(ip, port, timeout=CHIEF_TIMEOUT):
    """Returns once the chief's port accepts a connection; raises `ValueError` after `timeout` s."""
    deadline = time.time() + timeout
    while True:
        if net.can_reach(ip, port, timeout=min(2.0, max(0.1, deadline - time.time()))):
            return
        if time.time() >= deadline:
            raise ValueError(
                f"No KerasTuner chief answers at {ip}:{port} after {timeout:g} s: start the chief first "
                f"(KERASTUNER_TUNER_ID=chief with the same KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT), check "
                "the address, or wait longer with TFFT_CHIEF_TIMEOUT=<seconds>. No trial was started.")
        time.sleep(0.25)


def check_port_free(ip, port):
    """Raises `ValueError` when `ip:port` cannot be served (another chief or program has it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((ip, port))
        except OSError as e:
            raise ValueError(
                f"The chief cannot serve on {ip}:{port} ({e.strerror or e}): another chief or program uses that "
                "port. Pick a free KERASTUNER_ORACLE_PORT (tfft.tuning.free_port() finds one) on every process "
                "of this search.") from None


class ChiefLock:
    """One process owns a search's oracle: the chief, or the only process of a local search.

    An exclusive `flock` on `<project dir>/tfft_chief.lock`, held for the life of the
    process (a crashed or killed owner releases it); a second owner of the same folder is
    refused instead of mixing two oracles' trials.
    """

    def __init__(self, project_dir, current_role="single"):
        os.makedirs(project_dir, exist_ok=True)
        path = os.path.abspath(os.path.join(project_dir, LOCK_FILE))
        if path in _HELD:
            return  # this process owns it already (a tuner made again, e.g. to resume)
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise ValueError(
                f"{project_dir} is already served by {owner}: two chiefs (or searches) on one folder would mix "
                "their trials. Stop that process, or give this search another directory / project_name; workers "
                "join with KERASTUNER_TUNER_ID=tuner<N>.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{current_role} pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        _HELD[path] = handle


def serve(tuner, on_progress=None, poll=0.2):
    """The chief's part: serves `tuner.oracle` to the workers until the search is done.

    KerasTuner's own loop (`oracle_chief.start_server`) polls every 20 s at the end; this
    one polls every `poll` seconds, calls `on_progress()` whenever a trial ends (the chief
    writes the results as the search goes), and returns once the oracle has stopped and no
    worker is left.
    """
    # Imported here, as KerasTuner does, so that protobuf loads only for distributed searches.
    import grpc
    from keras_tuner.src import protos  # private: see BUILD_NOTES, "Private APIs"
    from keras_tuner.src.distribute import oracle_chief

    ip, port = os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(tuner.oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(f"{ip}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        check_port_free(ip, int(port))  # says why, in one sentence
        raise ValueError(f"The chief cannot serve on {ip}:{port}.")
    server.start()
    print(f"[tfft] chief: serving the search on {ip}:{port}", flush=True)
    finished = -1
    try:
        while True:
            time.sleep(poll)
            done = sum(1 for t in tuner.oracle.trials.values() if t.status in ("COMPLETED", "FAILED", "INVALID"))
            if done != finished and on_progress is not None:
                finished = done
                on_progress()
            if servicer.stop_triggered and oracle_chief.exit_chief(tuner.oracle):
                break
    finally:
        server.stop(grace=1)


def free_port(host="127.0.0.1"):
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def worker_env(tuner_id, ip, port, base=None):
    """The environment of one process of a distributed search (`tuner_id`: "chief", "tuner0", ...)."""
    env = dict(os.environ if base is None else base)
    env.update(KERASTUNER_TUNER_ID=str(tuner_id), KERASTUNER_ORACLE_IP=str(ip), KERASTUNER_ORACLE_PORT=str(port))
    return env


def launch_local(command, num_workers=2, *, ip="127.0.0.1", port=None, gpus_per_worker=None, timeout=None,
                 env=None, log_dir=None):
    """Runs a tuning script as a chief and `num_workers` workers on this machine.

    Each process runs `command` (a list, e.g. `[sys.executable, "tune.py"]`) with
    KerasTuner's `KERASTUNER_*` variables; with `gpus_per_worker`, worker i sees only its
    own GPUs (`CUDA_VISIBLE_DEVICES`) and the chief none. If any process is still running
    after `timeout` seconds, every process is stopped and `TimeoutError` raised: a lost
    worker never leaves the search hanging.

    Returns:
        `{tuner_id: return code}`.

    Example:
        codes = launch_local([sys.executable, "tune.py"], num_workers=4, gpus_per_worker=1, timeout=6 * 3600)
        assert set(codes.values()) == {0}
    """
    port = port or free_port(ip)
    roles = ["chief"] + [f"tuner{i}" for i in range(num_workers)]
    procs = {}
    deadline = None if timeout is None else time.time() + timeout
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
    try:
        for i, name in enumerate(roles):
            role_env = worker_env(name, ip, port, env)
            if gpus_per_worker is not None:
                first = (i - 1) * gpus_per_worker
                role_env["CUDA_VISIBLE_DEVICES"] = "" if name == "chief" else ",".join(
                    str(g) for g in range(first, first + gpus_per_worker))
            out = open(os.path.join(log_dir, f"{name}.log"), "w") if log_dir else None
            procs[name] = (subprocess.Popen(command, env=role_env, stdout=out, stderr=subprocess.STDOUT if out
                                            else None), out)
            if name == "chief":
                _wait_for_serving(procs["chief"][0], ip, port, deadline)
        codes = {}
        for role, (proc, _) in procs.items():
            remaining = None if deadline is None else max(0.1, deadline - time.time())
            codes[role] = proc.wait(timeout=remaining)
        return codes
    except (subprocess.TimeoutExpired, TimeoutError):
        raise TimeoutError(f"The distributed search did not finish within {timeout} s; all processes were stopped.")
    finally:
        for proc, out in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if out:
                out.close()



def _wait_for_serving(chief, ip, port, deadline):
    """Waits until the chief serves (it may load its data first) before workers start."""
    while not net.can_reach(ip, port, timeout=1.0):
        if chief.poll() is not None:
            return  # the chief ended already (its error is in its log); the workers will say so too
        if deadline is not None and time.time() > deadline:
            raise TimeoutError("the chief did not start serving in time")
        time.sleep(0.25)
