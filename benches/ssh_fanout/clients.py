"""The peers' side of the SSH fan-out benchmark: Fabric and parallel-ssh.

    python clients.py <fabric|pssh> <a|b> <work-dir> [hosts]

<work-dir> holds `env` (written by bench_sshd), `ssh_config` (hosts h000..h099,
all 127.0.0.1), and `payload.bin` (100 KB). Workload a runs `true` on each host;
b uploads the payload to each host, then runs five commands (the first checks
the upload's size). Every host gets its own SSH session. Prints
`op_wall=<seconds>`: the fan-out alone, without interpreter start and imports.
Any failure exits non-zero.
"""

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

CONCURRENCY = 100


def read_env(work):
    env = {}
    with open(os.path.join(work, "env")) as f:
        for line in f:
            if "=" in line:
                k, v = line.split("=", 1)
                env[k.strip()] = v.strip()
    return env


def commands(path):
    return ["uname -r", "id -u", f"ls -l {path}", f"rm -f {path}"]


def fabric(workload, work, hosts, env, payload):
    from fabric import Config, ThreadingGroup

    config = Config(runtime_ssh_path=os.path.join(work, "ssh_config"))
    group = ThreadingGroup(
        *hosts,
        config=config,
        connect_kwargs={
            "key_filename": env["key"],
            "look_for_keys": False,
            "allow_agent": False,
        },
    )
    started = time.perf_counter()
    if workload == "a":
        # ThreadingGroup: one thread per host; raises GroupException on any failure.
        group.run("true", hide=True)
    else:
        # A per-host task (each host its own remote path), one thread per host
        # over the group's connections: Group.put would write one path everywhere.
        def task(c):
            path = f"bench-fabric-{c.original_host}.bin"
            c.put(payload, remote=path)
            size = c.run(f"wc -c < {path}", hide=True).stdout.strip()
            if size != str(os.path.getsize(payload)):
                raise RuntimeError(f"{c.original_host}: uploaded file has {size!r} bytes")
            for line in commands(path):
                c.run(line, hide=True)

        with ThreadPoolExecutor(CONCURRENCY) as pool:
            for f in [pool.submit(task, c) for c in group]:
                f.result()
    wall = time.perf_counter() - started
    group.close()
    print(f"op_wall={wall:.4f}")


def pssh(workload, work, hosts, env, payload):
    from gevent import joinall
    from pssh.clients import ParallelSSHClient

    client = ParallelSSHClient(
        ["127.0.0.1"] * len(hosts),
        user=env["user"],
        port=int(env["port"]),
        pkey=env["key"],
        pool_size=CONCURRENCY,
        num_retries=1,
    )

    def run(line, host_args=None):
        output = client.run_command(line, host_args=host_args, stop_on_errors=True)
        client.join(output)
        for o in output:
            if o.exception is not None or o.exit_code != 0:
                raise RuntimeError(f"`{line}` on {o.host}: exit {o.exit_code} {o.exception}")
        return output

    started = time.perf_counter()
    if workload == "a":
        run("true")
    else:
        args = [{"h": h} for h in hosts]
        path = "bench-pssh-%(h)s.bin"
        joinall(client.copy_file(payload, path, copy_args=args), raise_error=True)
        size = str(os.path.getsize(payload))
        for o in run(f"wc -c < {path}", host_args=args):
            got = "".join(o.stdout).strip()
            if got != size:
                raise RuntimeError(f"{o.host}: uploaded file has {got!r} bytes")
        for line in commands(path):
            run(line, host_args=args)
    wall = time.perf_counter() - started
    print(f"op_wall={wall:.4f}")


def main():
    tool, workload, work = sys.argv[1], sys.argv[2], sys.argv[3]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    hosts = [f"h{i:03d}" for i in range(n)]
    env = read_env(work)
    payload = os.path.join(work, "payload.bin")
    {"fabric": fabric, "pssh": pssh}[tool](workload, work, hosts, env, payload)


if __name__ == "__main__":
    main()
