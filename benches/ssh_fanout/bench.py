"""Runs the SSH fan-out benchmark and prints its table (called by `run`).

    python bench.py [--reps N] [--concurrency "default 200"] [--delays "0 25 50"] \\
        <work-dir> <fanout-bin> <venv-python> [hosts...]

Each tool runs as its own process at each size (`hosts`, default 100) and
each concurrency (`default`: each tool's own; a number: the same for all)
and each one-way delay in ms (`--delays`, default 0: a delay D above 0 is
reached through the work folder <work-dir>/delay-D, whose inventory names
the latency proxy the run script put in front of the servers).
Its wall time and the CPU time (user+sys) of its whole process tree are
measured from here (resource.getrusage of RUSAGE_CHILDREN: every process it
started and waited for); its peak memory is the largest sum of the resident
sets of its process and all its descendants, sampled from /proc every 20 ms.
`op` is the time the tool itself reports for the fan-out alone, without
process start and imports. Repetitions are interleaved across tools; the
median is reported. A run that fails is tried once more; one that fails
twice is left out of its row's median, and the row says so.

With BENCH_SSHD_CGROUP set to a cgroup v1 cpuacct folder holding the sshd
listeners (the run script makes one when it can), the servers' CPU time for
each run is read from its `cpuacct.usage` too: the servers bound what any
client can reach.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CGROUP = os.environ.get("BENCH_SSHD_CGROUP")
PAGE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_EVERY = 0.02
WORKLOADS = ["a", "b"]


def server_cpu():
    """The servers' CPU seconds so far (all their processes), or nan without a cgroup."""
    if not CGROUP:
        return float("nan")
    with open(os.path.join(CGROUP, "cpuacct.usage")) as f:
        return int(f.read()) / 1e9


def server_processes():
    """How many processes the servers have (listeners and sessions), or 0 without a cgroup."""
    if not CGROUP:
        return 0
    with open(os.path.join(CGROUP, "tasks")) as f:
        return len(f.read().split())


def process_tree(pid):
    """pid and its descendants, from /proc/<pid>/task/<pid>/children.

    Only each process's main thread is asked for its children: none of the
    tools starts a process from another thread, and listing the threads of
    Fabric's 1,000 would make this sampler a load of its own.
    """
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass  # it has just ended
    return pids


def tree_rss(pid):
    """The resident set of pid and its descendants, in bytes."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def measure(cmd, work):
    env = dict(os.environ, HOME=os.path.join(work, "home"))
    idle = server_processes()
    server_before = server_cpu()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(SAMPLE_EVERY)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # The servers end the sessions after the client exits: let them finish
    # (their session processes gone, at most 20 s) before reading their CPU.
    if CGROUP:
        deadline = time.monotonic() + 20
        while server_processes() > idle and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        time.sleep(0.5)
    server = server_cpu() - server_before
    if proc.returncode != 0:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{tail}")
    values = dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)
    return {
        "wall": wall,
        "cpu": cpu,
        "server": server,
        "rss_mb": peak / 1e6,
        "op": float(values.get("op_wall", "nan")),
        "per_command_ms": float(values.get("per_command_ms", "nan")),
        "concurrency": values.get("concurrency", "?"),
    }


def attempt(cmd, work):
    """measure(), tried twice: a run that fails twice counts as failed (None)
    and is shown as such, instead of ending the benchmark (a peer's login
    can time out on a server at its limit)."""
    for tries in (1, 2):
        try:
            return measure(cmd, work)
        except RuntimeError as e:
            print(f"  failed (try {tries} of 2): {e}", file=sys.stderr, flush=True)
    return None


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def concurrency_label(asked, used):
    """`200`, or for `default` the tool's own number: `default (32)`."""
    if asked != "default":
        return asked
    return f"default ({used})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", default="default 200")
    parser.add_argument("--delays", default="0")
    parser.add_argument("--tools", default="", help="a subset of the tools, pyscaler among them")
    parser.add_argument("work")
    parser.add_argument("fanout")
    parser.add_argument("python")
    parser.add_argument("hosts", nargs="*", type=int)
    args = parser.parse_args()
    sizes = sorted(set(args.hosts or [100]))
    levels = args.concurrency.split()
    delays = sorted(set(int(d) for d in args.delays.split())) or [0]
    latency = delays != [0]
    load_before = loadavg()
    work, fanout, python, reps = args.work, args.fanout, args.python, args.reps
    at = lambda d: work if d == 0 else os.path.join(work, f"delay-{d}")  # noqa: E731
    clients = os.path.join(HERE, "clients.py")
    openssh = os.path.join(HERE, "openssh.sh")
    tools = {
        "pyscaler": lambda w, d, n, c: [fanout, d, w, str(n), c],
        "fabric": lambda w, d, n, c: [python, clients, "fabric", w, d, str(n), c],
        "parallel-ssh": lambda w, d, n, c: [python, clients, "pssh", w, d, str(n), c],
        "openssh xargs -P": lambda w, d, n, c: ["bash", openssh, w, d, str(n), c],
    }
    if args.tools:
        # Each tool by its first word (`openssh` for OpenSSH under xargs -P).
        wanted = args.tools.split()
        ids = {t.split()[0]: t for t in tools}
        if any(w not in ids for w in wanted) or "pyscaler" not in wanted:
            parser.error(f"--tools: some of {', '.join(ids)}, pyscaler among them; not {args.tools!r}")
        tools = {t: cmd for t, cmd in tools.items() if t.split()[0] in wanted}
    # A result's key: (workload, hosts, concurrency, delay, tool).
    results = {}
    for workload in WORKLOADS:
        for hosts in sizes:
            for level in levels:
                for delay in delays:
                    for rep in range(reps):
                        for tool, cmd in tools.items():
                            key = (workload, hosts, level, delay, tool)
                            r = attempt(cmd(workload, at(delay), hosts, level), at(delay))
                            results.setdefault(key, []).append(r)
                            if r is None:
                                continue
                            print(
                                f"  {workload} {hosts} hosts, concurrency {level}, {delay} ms,"
                                f" {tool:<17} run {rep + 1}: wall {r['wall']:.2f} s,"
                                f" op {r['op']:.2f} s, client CPU {r['cpu']:.2f} s,"
                                f" peak RSS {r['rss_mb']:.0f} MB, sshd CPU {r['server']:.2f} s",
                                file=sys.stderr,
                                flush=True,
                            )
    consecutive = [measure([fanout, work, "c", "1"], work) for _ in range(reps)]
    if any(None in runs for runs in results.values()):
        print("some runs failed twice: their rows are medians of the others", file=sys.stderr)

    def med(key, *row):
        ok = [r[key] for r in results[row] if r is not None]
        return statistics.median(ok) if ok else float("nan")

    def failed(*row):
        return sum(r is None for r in results[row])

    def per_host_ms(*row):
        return med("cpu", *row) * 1000 / row[1]

    names = {
        "a": "(a) `true`",
        "b": "(b) upload 100 KB + 5 commands",
    }
    cores = os.cpu_count() or 1
    with open(os.path.join(work, "hosts.tsv")) as f:
        servers = len({line.split("\t")[2] for line in f if line.strip()})
    smallest = sizes[0]
    growth = len(sizes) > 1
    print(
        f"\nSSH fan-out, a session per host to {servers} local sshd, median of {reps} runs,"
        f" {cores} cores, load average {load_before} before, {loadavg()} after"
    )
    if latency:
        print("(delay: the one-way delay of every segment between the tool and the servers,")
        print(" through the harness's latency proxy; a round trip takes twice the delay)")
    print("(wall, client CPU and peak RSS of the tool's whole process tree; op: the fan-out alone,")
    print(" as the tool times it; ratios: the tool's number / pyscaler's at the same size and")
    print(" concurrency, so 2.0x means twice pyscaler's; concurrency `default` is each tool's own:")
    print(" pyscaler's FanOut 32, Fabric's ThreadingGroup a thread per host, parallel-ssh's pool")
    print(" 100, and OpenSSH, which has none, under xargs -P 100)")
    print(" sshd CPU: the servers' CPU for the run; server floor: sshd CPU / cores, the least wall")
    print(" time the servers allow; floor: (sshd + client CPU) / cores, the least this machine allows")
    if growth:
        print(f" growth: client CPU per host and peak RSS at this size / at {smallest} hosts")
    print()

    def table_row(workload, hosts, level, delay, tool, base):
        row = (workload, hosts, level, delay, tool)
        wall, cpu, server = med("wall", *row), med("cpu", *row), med("server", *row)
        rss = med("rss_mb", *row)
        used = next((r["concurrency"] for r in results[row] if r is not None), "?")
        lost = f" ({failed(*row)} of {reps} failed)" if failed(*row) else ""
        cells = [names[workload], str(hosts)] + ([str(delay)] if latency else []) + [
            tool, concurrency_label(level, used),
            f"{wall:.2f}{lost}", f"{med('op', *row):.2f}", f"{per_host_ms(*row):.1f}",
            f"{rss:.0f}", f"{wall / med('wall', *base):.1f}x",
            f"{cpu / med('cpu', *base):.1f}x", f"{server:.2f}",
            f"{server / cores:.2f}", f"{wall / (server / cores):.2f}",
            f"{(server + cpu) / cores:.2f}",
        ]
        if growth:
            first = (workload, smallest, level, delay, tool)
            if hosts == smallest:
                cells += ["", ""]
            else:
                cells += [
                    f"{per_host_ms(*row) / per_host_ms(*first):.2f}x",
                    f"{rss / med('rss_mb', *first):.2f}x",
                ]
        print("| " + " | ".join(cells) + " |")

    header = ["workload", "hosts"] + (["delay ms"] if latency else []) + [
        "tool", "concurrency", "wall s", "op s", "client CPU ms/host",
        "peak RSS MB", "wall / pyscaler", "CPU / pyscaler", "sshd CPU s", "server floor s",
        "wall / server floor", "floor s",
    ]
    if growth:
        header += [f"CPU/host vs {smallest}", f"RSS vs {smallest}"]
    print("| " + " | ".join(header) + " |")
    print("| --- | ---: |" + (" ---: |" if latency else "") + " --- | --- |"
          + " ---: |" * (len(header) - 4 - latency))
    for workload in WORKLOADS:
        for level in levels:
            for delay in delays:
                for hosts in sizes:
                    base = (workload, hosts, level, delay, "pyscaler")
                    for tool in tools:
                        table_row(workload, hosts, level, delay, tool, base)
    per = statistics.median(r["per_command_ms"] for r in consecutive)
    server_per = statistics.median(r["server"] for r in consecutive) * 1000 / 101
    print(f"\n(c) 100 consecutive `true` over one reused pyscaler session: {per:.2f} ms per command"
          f" (sshd CPU {server_per:.2f} ms per command, login included)")

    checks = []
    if 100 in sizes and "default" in levels and 0 in delays:
        row = lambda w, tool: (w, 100, "default", 0, tool)  # noqa: E731
        checks += [
            ("issue 4: (a) 100 hosts, pyscaler wall <= 1.2 s",
             med("wall", *row("a", "pyscaler")), 1.2, "s"),
            ("issue 4: (a) 100 hosts, pyscaler client CPU <= Fabric's / 3",
             med("cpu", *row("a", "pyscaler")), med("cpu", *row("a", "fabric")) / 3, "s"),
            ("issue 4: (b) 100 hosts, pyscaler wall <= Fabric's / 2",
             med("wall", *row("b", "pyscaler")), med("wall", *row("b", "fabric")) / 2, "s"),
        ]
    checks.append(("issue 4: (c) per command <= 5 ms", per, 5.0, "ms"))
    largest = sizes[-1]
    for workload in WORKLOADS:
        for level in levels:
            if 0 not in delays:
                break
            row = (workload, largest, level, 0, "pyscaler")
            if growth and largest >= 1000:
                checks.append((
                    f"issue 18: ({workload}) concurrency {level}, pyscaler client CPU per host"
                    f" at {largest} <= at {smallest}",
                    per_host_ms(*row), per_host_ms(workload, smallest, level, 0, "pyscaler"), "ms",
                ))
            if level == "200":
                checks.append((
                    f"issue 18: ({workload}) {largest} hosts, concurrency 200, pyscaler peak RSS"
                    " < 100 MB", med("rss_mb", *row), 100.0, "MB",
                ))
            checks.append((
                f"issue 18: ({workload}) {largest} hosts, concurrency {level}, pyscaler wall"
                " <= 1.1 x server floor",
                med("wall", *row), 1.1 * med("server", *row) / cores, "s",
            ))
    slowest = delays[-1]
    if slowest > 0:
        for level in levels:
            for hosts in sizes:
                peers = {t: med("wall", "b", hosts, level, slowest, t) for t in tools if t != "pyscaler"}
                if not peers:
                    break
                best = min(peers, key=peers.get)
                checks.append((
                    f"issue 18: (b) {hosts} hosts, {slowest} ms, concurrency {level}, pyscaler wall"
                    f" <= best peer's ({best}) / 1.5",
                    med("wall", "b", hosts, level, slowest, "pyscaler"), peers[best] / 1.5, "s",
                ))
    print("\nTargets:")
    for what, got, limit, unit in checks:
        verdict = "met" if got <= limit else "MISSED"
        print(f"- {what}: {got:.3f} {unit} (limit {limit:.3f} {unit}): {verdict}")


if __name__ == "__main__":
    main()
