"""Runs the SSH fan-out benchmark and prints its table (called by `run`).

    python bench.py <work-dir> <fanout-bin> <venv-python> [reps] [hosts]

Each tool runs as its own process; its wall time and the CPU time (user+sys)
of its whole process tree are measured from here (resource.getrusage of
RUSAGE_CHILDREN: every process it started and waited for). `op` is the time
the tool itself reports for the fan-out alone, without process start and
imports. Repetitions are interleaved across tools; the median is reported.

With BENCH_SSHD_CGROUP set to a cgroup v1 cpuacct folder holding sshd (the
run script makes one when it can), the server's CPU time for each run is read
from its `cpuacct.usage` too: the sshd side bounds what any client can reach.
"""

import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


CGROUP = os.environ.get("BENCH_SSHD_CGROUP")


def server_cpu():
    """sshd's CPU seconds so far (all its processes), or nan without a cgroup."""
    if not CGROUP:
        return float("nan")
    with open(os.path.join(CGROUP, "cpuacct.usage")) as f:
        return int(f.read()) / 1e9


def measure(cmd, env):
    server_before = server_cpu()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # sshd ends the sessions after the client exits: let it finish before reading.
    time.sleep(0.5)
    server = server_cpu() - server_before
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{tail}")
    values = dict(
        line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line
    )
    return {
        "wall": wall,
        "cpu": cpu,
        "server": server,
        "op": float(values.get("op_wall", "nan")),
        "per_command_ms": float(values.get("per_command_ms", "nan")),
    }


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


LOAD = []


def main():
    LOAD.append(loadavg())
    work, fanout, python = sys.argv[1], sys.argv[2], sys.argv[3]
    reps = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    hosts = sys.argv[5] if len(sys.argv) > 5 else "100"
    env = dict(os.environ, HOME=os.path.join(work, "home"))
    envfile = os.path.join(work, "env")
    payload = os.path.join(work, "payload.bin")
    clients = os.path.join(HERE, "clients.py")
    openssh = os.path.join(HERE, "openssh.sh")
    tools = {
        "pyscaler": lambda w: [fanout, envfile, w, hosts, payload],
        "fabric": lambda w: [python, clients, "fabric", w, work, hosts],
        "parallel-ssh": lambda w: [python, clients, "pssh", w, work, hosts],
        "openssh xargs -P": lambda w: ["bash", openssh, w, work, hosts],
    }
    results = {}
    for workload in ["a", "b"]:
        for rep in range(reps):
            for tool, cmd in tools.items():
                r = measure(cmd(workload), env)
                results.setdefault((workload, tool), []).append(r)
                print(
                    f"  {workload} {tool:<17} run {rep + 1}: wall {r['wall']:.2f} s,"
                    f" op {r['op']:.2f} s, client CPU {r['cpu']:.2f} s,"
                    f" sshd CPU {r['server']:.2f} s",
                    file=sys.stderr,
                    flush=True,
                )
    consecutive = [measure([fanout, envfile, "c"], env) for _ in range(reps)]

    def med(workload, tool, key):
        return statistics.median(r[key] for r in results[(workload, tool)])

    names = {
        "a": f"(a) `true` on {hosts} hosts",
        "b": f"(b) upload 100 KB + 5 commands on {hosts} hosts",
    }
    cores = os.cpu_count() or 1
    print(f"\nSSH fan-out, {hosts} sessions to one local sshd, median of {reps} runs,"
          f" {cores} cores, load average {LOAD[0]} before, {loadavg()} after")
    print("(wall and client CPU of the whole process; op: the fan-out alone, as the tool times it;")
    print(" ratios: the tool's number / pyscaler's, so 2.0x means twice pyscaler's)\n")
    print(" sshd CPU: the server's CPU for the run; floor: (sshd + client CPU) / cores, the least")
    print(" wall time this machine allows for that work)\n")
    print("| workload | tool | wall s | op s | client CPU s | wall / pyscaler | CPU / pyscaler"
          " | sshd CPU s | floor s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for workload in ["a", "b"]:
        base_wall = med(workload, "pyscaler", "wall")
        base_cpu = med(workload, "pyscaler", "cpu")
        for tool in tools:
            wall = med(workload, tool, "wall")
            cpu = med(workload, tool, "cpu")
            server = med(workload, tool, "server")
            print(
                f"| {names[workload]} | {tool} | {wall:.2f} | {med(workload, tool, 'op'):.2f} |"
                f" {cpu:.2f} | {wall / base_wall:.1f}x | {cpu / base_cpu:.1f}x |"
                f" {server:.2f} | {(server + cpu) / cores:.2f} |"
            )
    per = statistics.median(r["per_command_ms"] for r in consecutive)
    server_per = statistics.median(r["server"] for r in consecutive) * 1000 / 101
    print(f"\n(c) 100 consecutive `true` over one reused pyscaler session: {per:.2f} ms per command"
          f" (sshd CPU {server_per:.2f} ms per command, login included)")

    fab_a_cpu = med("a", "fabric", "cpu")
    print("\nTargets (issue 4):")
    checks = [
        ("(a) pyscaler wall <= 1.2 s", med("a", "pyscaler", "wall"), 1.2, "s"),
        ("(a) pyscaler client CPU <= Fabric's / 3", med("a", "pyscaler", "cpu"), fab_a_cpu / 3, "s"),
        ("(b) pyscaler wall <= Fabric's / 2", med("b", "pyscaler", "wall"), med("b", "fabric", "wall") / 2, "s"),
        ("(c) per command <= 5 ms", per, 5.0, "ms"),
    ]
    for what, got, limit, unit in checks:
        verdict = "met" if got <= limit else "MISSED"
        print(f"- {what}: {got:.3f} {unit} (limit {limit:.3f} {unit}): {verdict}")


if __name__ == "__main__":
    main()
