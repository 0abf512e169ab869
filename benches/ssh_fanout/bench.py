"""Runs the SSH fan-out benchmark and prints its table (called by `run`).

    python bench.py <work-dir> <fanout-bin> <venv-python> [reps] [hosts]

Each tool runs as its own process; its wall time and the CPU time (user+sys)
of its whole process tree are measured from here (resource.getrusage of
RUSAGE_CHILDREN: every process it started and waited for). `op` is the time
the tool itself reports for the fan-out alone, without process start and
imports. Repetitions are interleaved across tools; the median is reported.
"""

import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(cmd, env):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{tail}")
    values = dict(
        line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line
    )
    return {
        "wall": wall,
        "cpu": cpu,
        "op": float(values.get("op_wall", "nan")),
        "per_command_ms": float(values.get("per_command_ms", "nan")),
    }


def main():
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
                    f" op {r['op']:.2f} s, client CPU {r['cpu']:.2f} s",
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
    print(f"\nSSH fan-out, {hosts} sessions to one local sshd, median of {reps} runs")
    print("(wall and client CPU of the whole process; op: the fan-out alone, as the tool times it;")
    print(" ratios: the tool's number / pyscaler's, so 2.0x means twice pyscaler's)\n")
    print("| workload | tool | wall s | op s | client CPU s | wall / pyscaler | CPU / pyscaler |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for workload in ["a", "b"]:
        base_wall = med(workload, "pyscaler", "wall")
        base_cpu = med(workload, "pyscaler", "cpu")
        for tool in tools:
            wall = med(workload, tool, "wall")
            cpu = med(workload, tool, "cpu")
            print(
                f"| {names[workload]} | {tool} | {wall:.2f} | {med(workload, tool, 'op'):.2f} |"
                f" {cpu:.2f} | {wall / base_wall:.1f}x | {cpu / base_cpu:.1f}x |"
            )
    per = statistics.median(r["per_command_ms"] for r in consecutive)
    print(f"\n(c) 100 consecutive `true` over one reused pyscaler session: {per:.2f} ms per command")

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
