"""The search through Ray: a local cluster on this machine gives what the local pool gives,
a worker killed mid-build is retried, and an address that does not answer is one line."""

import subprocess
import threading
import time

import pytest
from conftest import run_cli

from edgeformer.artifact import load_artifact
from edgeformer.search import SearchSpec, search

ray = pytest.importorskip("ray")

SPACE = "quant=fp32,int8 prune=0 seq_len=16 lengths=static batch=1"  # static, no batch method: half the lowering


@pytest.fixture
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _kill_first_build_worker(stop: threading.Event, killed: list) -> None:
    """SIGKILL the first Ray worker seen running a build, as a machine failure would."""
    while not stop.is_set() and not killed:
        found = subprocess.run(["pgrep", "-f", "ray::build_candidate"], capture_output=True, text=True).stdout.split()
        if found:  # a worker is titled ray::build_candidate only while it runs that task
            subprocess.run(["kill", "-9", found[0]])
            killed.append(found[0])
        time.sleep(0.2)


def test_ray_gives_what_the_local_pool_gives_even_when_a_worker_dies(cluster, tiny_bert_cls, data_csv, tmp_path):
    def run(executor: str, where: str):
        spec = SearchSpec(str(tiny_bert_cls), "rpi5", data=str(data_csv), out=tmp_path / where, space=SPACE,
                          executor=executor, jobs=2, max_accuracy_drop=100)
        return search(spec, say=lambda line: None)

    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_build_worker, args=(stop, killed), daemon=True)
    killer.start()
    try:
        on_ray = run("ray", "ray")
    finally:
        stop.set()
        killer.join()
    assert killed, "no Ray build worker was seen"
    local = run("local", "local")
    assert [r["status"] for r in on_ray.results] == ["measured"] * 2
    for a, b in zip(on_ray.results, local.results, strict=True):
        assert a["key"] == b["key"] and a["accuracy"] == b["accuracy"] and a["size_mb"] == b["size_mb"]
        assert load_artifact(a["artifact"]).manifest.numerics == load_artifact(b["artifact"]).manifest.numerics
    assert on_ray.winner["key"] == local.winner["key"]


def test_a_ray_address_that_does_not_answer_is_one_line(tiny_bert_cls, data_csv, capsys, tmp_path):
    code, _, err = run_cli(["search", str(tiny_bert_cls), "--data", str(data_csv), "-o", str(tmp_path / "o"),
                            "--space", SPACE, "--executor", "ray://127.0.0.1:9", "--target", "rpi5"], capsys)
    assert code == 2 and "does not answer" in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "o").exists()
