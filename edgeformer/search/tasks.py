"""The work a search hands to its executor, and the executors that run it.

Tasks are top-level functions of plain data (picklable for a process pool, and for Ray),
each writing its output atomically into the search's cache, so a killed worker leaves
nothing half-written and a rerun finds what finished. Workers share the search's
filesystem: a local pool, or a Ray cluster on this machine or on a shared mount.

Measurement is never a task: it runs in the search's own process, one candidate at a time,
after the builds, so no timing shares the machine with a build and one device never times
two things at once.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from edgeformer.errors import UserError

EXECUTORS = ("local", "ray", "ray://ADDRESS")


def build_candidate(spec: dict, out: str) -> dict:
    """Build one candidate into `out` (no measuring: the search measures), budgets not enforced."""
    from edgeformer.pipeline import BuildSpec, build

    def work() -> dict:
        build(BuildSpec.from_dict(spec, out=out))
        return dict(path=out)

    return _guarded(work)


def prune_level(model: str, data: str, folder: str, options: dict) -> dict:
    """Prune `model` once for every candidate of one pruning level (resumable, atomic)."""
    from edgeformer.train.prune_run import PruneOptions, prune

    def work() -> dict:
        prune(model, data, Path(folder), PruneOptions(**options))
        return dict(path=folder)

    return _guarded(work)


def prune_lm_level(model: str, text: str, folder: str, options: dict) -> dict:
    """Prune causal LM `model` once for every candidate of one pruning level, distilled on `text`."""
    from edgeformer.train.prune_lm import LMPruneOptions, prune_lm

    def work() -> dict:
        prune_lm(model, text, Path(folder), LMPruneOptions(**options))
        return dict(path=folder)

    return _guarded(work)


def _guarded(work: Callable[[], dict]) -> dict:
    """`work()`, or {"error": ...}: one candidate's failure is recorded, not the search's end."""
    try:
        return work()
    except UserError as e:
        return dict(error=str(e))
    except Exception as e:  # noqa: BLE001  a bug in one candidate: keep its traceback in the record
        return dict(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())


def check_executor(executor: str) -> None:
    """UserError for an unknown executor, or a ray:// address that does not answer."""
    if executor.startswith("ray://"):
        _check_answers(executor)
    elif executor not in ("local", "ray"):
        raise UserError(f"--executor {executor!r}: use one of {', '.join(EXECUTORS)}")


def run_tasks(executor: str, jobs: int, calls: list[tuple[str, tuple]]) -> Iterator[tuple[int, dict]]:
    """Run each (task name, args); yields (index, result) as each finishes."""
    if not calls:
        return
    if executor == "local":
        yield from _local(jobs, calls)
    else:
        yield from _ray(executor, jobs, calls)


def _local(jobs: int, calls: list[tuple[str, tuple]]) -> Iterator[tuple[int, dict]]:
    """`jobs` fresh Python processes at a time, one per task (a build's memory goes with its
    process; a user's script needs no `if __name__ == "__main__"` guard, as spawn would)."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = {pool.submit(_in_process, name, args): i for i, (name, args) in enumerate(calls)}
        for f in as_completed(futures):
            yield futures[f], f.result()
    finally:  # the caller stopped early (a failed prune): queued tasks never start
        pool.shutdown(wait=True, cancel_futures=True)


def _in_process(name: str, args: tuple) -> dict:
    """The task in a fresh `python -m edgeformer.search.tasks NAME ARGS_JSON` (no time limit: a
    prune distils for many minutes); a crashed worker is a failed task."""
    from edgeformer.validate.latency import run_json_worker

    try:
        return run_json_worker(["-m", "edgeformer.search.tasks", name, json.dumps(list(args))], os.cpu_count() or 1,
                               f"{name} task", timeout=None)
    except UserError as e:
        return dict(error=str(e))


def _check_answers(address: str, timeout: float = 5.0) -> None:
    """A ray://HOST[:PORT] whose port does not accept a connection fails in seconds, not after
    Ray Client's ~30 s of retries."""
    import socket

    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "10001")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        raise UserError(f"--executor {address}: the Ray cluster does not answer ({e}); start it (ray start --head) "
                        "or check the address (ray://HOST:10001 is Ray Client's default port)") from None


def _ray(executor: str, jobs: int, calls: list[tuple[Callable, tuple]]) -> Iterator[tuple[int, dict]]:
    """Ray tasks: on a local cluster (`ray`) or the cluster at ray://ADDRESS. A task whose worker
    dies is retried by Ray; results already yielded are kept by the caller."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor {executor}: Ray is not installed; pip install 'edgeformer[ray]'") from None
    address = None if executor == "ray" else executor
    try:
        if not ray.is_initialized():
            if address is None:
                ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
    except Exception as e:  # noqa: BLE001  ConnectionError and Ray's own errors alike
        raise UserError(f"--executor {executor}: the Ray cluster does not answer ({type(e).__name__}: {e}); start it "
                        f"(ray start --head) or check the address") from None
    refs = {ray.remote(num_cpus=1, max_retries=2)(TASKS[name]).remote(*args): i for i, (name, args) in enumerate(calls)}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        try:
            yield refs[done[0]], ray.get(done[0])
        except Exception as e:  # noqa: BLE001  retries exhausted
            yield refs[done[0]], dict(error=f"ray task failed: {type(e).__name__}: {e}")


TASKS: dict[str, Callable[..., dict]] = {"build": build_candidate, "prune": prune_level, "prune_lm": prune_lm_level}

if __name__ == "__main__":  # a local worker: the task's name and its arguments as JSON in argv
    print(json.dumps(TASKS[sys.argv[1]](*json.loads(sys.argv[2]))))
