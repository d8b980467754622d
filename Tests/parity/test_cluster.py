"""The Slurm job array of Pipelines/slurm/ on a real one-node Slurm cluster started on loopback by this test.

Debian's slurmctld, slurmd and munged run as this (root) user from a configuration generated into a temporary folder:
munge with its own key and socket, slurm told the socket through AuthInfo, linuxproc process tracking and no task
plugin (no cgroups: this runs in containers). `Pipelines/slurm/submit.sh` queues the array (N = 4, one part per task)
and the merge that depends on it; the merged dataset must equal a single-process build of the same pipeline: the
same sample keys and the same bytes in every member of every sample.

Skipped, with the reason, only when the Slurm or munge programs are not installed (`make deps-cluster`).
"""
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import ROOT, SHARED, run
from test_partition_geometry import samples

PROGRAMS = ["slurmctld", "slurmd", "munged", "sbatch", "scontrol", "squeue"]
PARTS = 4


def program(name):
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)


MISSING = [name for name in PROGRAMS if program(name) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"Slurm is not installed ({', '.join(MISSING)} not found): "
                                                      "run `make deps-cluster` (apt: slurmctld slurmd slurm-client munge)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout, logs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    text = "\n".join(f"--- {log}:\n{pathlib.Path(log).read_text()[-3000:]}" for log in logs if os.path.exists(log))
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{text}")


class Cluster:
    """munged + slurmctld + slurmd in `folder`, stopped (with any job still running) by `stop()`."""

    def __init__(self, folder):
        self.folder = folder
        self.daemons = []
        self.conf = folder / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.env.pop("SLURM_JOB_ID", None)  # a test run inside a Slurm job must not see that job

    def log(self, name):
        return str(self.folder / f"{name}.log")

    def start(self):
        f = self.folder
        for d in ("state", "spool", "munge"):
            (f / d).mkdir()
        os.chmod(f / "munge", 0o700)
        key = f / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        sock = f / "munge" / "munge.socket"
        self.daemon("munged", [program("munged"), "--foreground", "--force", f"--socket={sock}", f"--key-file={key}",
                                f"--pid-file={f / 'munge' / 'munged.pid'}", f"--seed-file={f / 'munge' / 'munged.seed'}",
                                f"--log-file={self.log('munged')}", "--num-threads=2"])
        wait_for("munged's socket", sock.exists, 30, [self.log("munged")])
        user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
        self.conf.write_text("\n".join([
            "ClusterName=vlmdata-test",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={sock}",
            f"StateSaveLocation={f / 'state'}",
            f"SlurmdSpoolDir={f / 'spool'}",
            f"SlurmctldPidFile={f / 'slurmctld.pid'}",
            f"SlurmdPidFile={f / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.log('slurmctld')}",
            f"SlurmdLogFile={self.log('slurmd')}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill",
            "MpiDefault=none",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",
            "MinJobAge=600",
            "NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN",
            "PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))
        self.daemon("slurmctld", [program("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self.daemon("slurmd", [program("slurmd"), "-D", "-N", "localhost", "-f", str(self.conf)])
        wait_for("the node to be idle", lambda: "idle" in self.sinfo(), 60,
                 [self.log("slurmctld"), self.log("slurmd"), self.log("slurmctld.out"), self.log("slurmd.out")])

    def daemon(self, name, argv):
        out = open(self.log(f"{name}.out"), "w")
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.daemons.append((name, process))
        time.sleep(0.2)
        if process.poll() is not None:
            raise AssertionError(f"{name} exited at once ({process.returncode}):\n{pathlib.Path(self.log(name + '.out')).read_text()}")

    def sinfo(self):
        result = subprocess.run([program("scontrol"), "show", "node", "localhost"], capture_output=True, text=True,
                                env=self.env)
        return result.stdout.lower() if result.returncode == 0 else ""

    def scontrol_job(self, job):
        """{task id or job id: JobState} of a job (an array's tasks each), from `scontrol show job`."""
        out = subprocess.run([program("scontrol"), "show", "job", "-o", str(job)], capture_output=True, text=True,
                             env=self.env).stdout
        states = {}
        for line in out.splitlines():
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            states[fields.get("ArrayTaskId", fields.get("JobId"))] = fields.get("JobState")
        return states

    def stop(self):
        if self.conf.exists() and program("scancel"):
            subprocess.run([program("scancel"), "--user", str(os.getuid())], env=self.env, capture_output=True)
        for name, process in reversed(self.daemons):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path / "cluster")
    c.folder.mkdir()
    try:
        c.start()
        yield c
    finally:
        c.stop()


def test_slurm_job_array_build_merges_to_the_single_process_build(vlmdata_bin, cluster, tmp_path):
    pipeline = ROOT / "Pipelines" / "coco-mini.yaml"
    data = ["--set", f"data={SHARED}"]
    whole = tmp_path / "whole"
    run(vlmdata_bin, "run", pipeline, "--workspace", whole, "--quiet", *data, cwd=ROOT)
    expected = samples(str(whole))
    assert len(expected) == 80   # one multi-turn sample per image (docs/text.md)

    work = tmp_path / "work"
    env = dict(cluster.env, VLMDATA=vlmdata_bin, VLMDATA_ARGS=" ".join(data))
    submitted = subprocess.run([ROOT / "Pipelines" / "slurm" / "submit.sh", pipeline, work, str(PARTS),
                                "--cpus-per-task=1", f"--chdir={ROOT}"], capture_output=True, text=True, env=env)
    assert submitted.returncode == 0, submitted.stderr
    array, merge = submitted.stdout.split()

    def finished():
        states = {**cluster.scontrol_job(array), "merge": cluster.scontrol_job(merge).get(merge)}
        return all(s in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
                   for s in states.values() if s) and "merge" in states and states["merge"] is not None
    logs = [str(work / f"part-{i}.out") for i in range(PARTS)] + [str(work / "merge.out"), cluster.log("slurmctld"),
                                                                   cluster.log("slurmd")]
    wait_for("the array job and the merge", finished, 240, logs)
    tasks = cluster.scontrol_job(array)
    assert sorted(tasks) == [str(i) for i in range(PARTS)], tasks
    assert set(tasks.values()) == {"COMPLETED"}, (tasks, [pathlib.Path(p).read_text()[-2000:] for p in logs[:PARTS]])
    assert cluster.scontrol_job(merge)[merge] == "COMPLETED", pathlib.Path(work / "merge.out").read_text()

    # every task built only its part, and the merge saw all of them
    merged = work / "merged"
    for i in range(PARTS):
        log = (work / f"part-{i}.out").read_text()
        assert f"vlmdata part {i}/{PARTS}" in log
    found = samples(str(merged))
    part_keys = [set(samples(str(work / f"part-{i}"))) for i in range(PARTS)]
    assert all(part_keys), "a part built no samples"
    assert sum(map(len, part_keys)) == len(set().union(*part_keys)) == len(expected)
    assert sorted(found) == sorted(expected)
    assert found == expected
    report = json.loads(run(vlmdata_bin, "verify", "--workspace", merged, "--json").stdout)
    assert report["samples"] == len(expected) and report["problem_count"] == 0
