"""The peers' side of the SSH fan-out benchmark: Fabric and parallel-ssh.

    python clients.py <fabric|pssh> <a|b> <work-dir> [hosts] [concurrency]

The hosts are the first `hosts` (100) rows of the inventory
<work-dir>/hosts.tsv (`name<TAB>address<TAB>port`, written by `run`); the
login user and key come from <work-dir>/env (written by bench_sshd), the
100 KB payload is <work-dir>/payload.bin. Workload a runs `true` on each host;
b uploads the payload to each host, then runs five commands (the first checks
the upload's size). Every host gets its own SSH session.

`concurrency` is `default` (the default: the tool's own, Fabric's
ThreadingGroup a thread per host, parallel-ssh's pool of 100) or a number.
Prints `concurrency=<n>` and `op_wall=<seconds>`: the fan-out alone, without
interpreter start and imports. Any failure exits non-zero.
"""

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def read_env(work):
    env = {}
    with open(os.path.join(work, "env")) as f:
        for line in f:
            if "=" in line:
                k, v = line.split("=", 1)
                env[k.strip()] = v.strip()
    return env


def read_inventory(work, n):
    """The first n hosts of the inventory, as (name, address, port)."""
    path = os.path.join(work, "hosts.tsv")
    hosts = []
    with open(path) as f:
        for line in f:
            if line.strip() and len(hosts) < n:
                name, address, port = line.rstrip("\n").split("\t")
                hosts.append((name, address, int(port)))
    if len(hosts) < n:
        raise SystemExit(f"{path} has {len(hosts)} hosts, {n} asked for")
    return hosts


def commands(path):
    return ["uname -r", "id -u", f"ls -l {path}", f"rm -f {path}"]


def fabric(workload, hosts, concurrency, env, payload):
    from fabric import Config, Connection, ThreadingGroup
    from paramiko import SSHConfig

    # Each host's address and port straight from the inventory, and no
    # ssh_config: paramiko looks a host up by matching every `Host` block,
    # so 1,000 hosts in an ssh_config cost it about 30 ms of CPU per host.
    config = Config(ssh_config=SSHConfig())
    connections = [
        Connection(
            address,
            user=env["user"],
            port=port,
            config=config,
            connect_kwargs={
                "key_filename": env["key"],
                "look_for_keys": False,
                "allow_agent": False,
            },
        )
        for _, address, port in hosts
    ]
    group = ThreadingGroup.from_connections(connections)
    # ThreadingGroup: one thread per host; a number bounds the threads instead.
    threads = len(hosts) if concurrency == "default" else int(concurrency)
    print(f"concurrency={threads}")
    started = time.perf_counter()
    if workload == "a" and concurrency == "default":
        # Raises GroupException on any failure.
        group.run("true", hide=True)
    else:
        # A per-host task (each host its own remote path) over the group's
        # connections: Group.put would write one path everywhere.
        def task(name, c):
            if workload == "a":
                c.run("true", hide=True)
                return
            path = f"bench-fabric-{name}.bin"
            c.put(payload, remote=path)
            size = c.run(f"wc -c < {path}", hide=True).stdout.strip()
            if size != str(os.path.getsize(payload)):
                raise RuntimeError(f"{name}: uploaded file has {size!r} bytes")
            for line in commands(path):
                c.run(line, hide=True)

        with ThreadPoolExecutor(threads) as pool:
            futures = [pool.submit(task, h[0], c) for h, c in zip(hosts, group)]
            for f in futures:
                f.result()
    wall = time.perf_counter() - started
    group.close()
    print(f"op_wall={wall:.4f}")


def pssh(workload, hosts, concurrency, env, payload):
    from gevent import get_hub, joinall
    from pssh.clients import ParallelSSHClient
    from pssh.config import HostConfig

    pool = {}
    if concurrency != "default":
        pool["pool_size"] = int(concurrency)
        # parallel-ssh does every handshake and login in gevent's thread pool
        # (10 threads unless set): behind a delay those ten bound its
        # concurrency whatever pool_size says. A number sets both.
        get_hub().threadpool.maxsize = int(concurrency)
    client = ParallelSSHClient(
        [address for _, address, _ in hosts],
        host_config=[HostConfig(port=port) for _, _, port in hosts],
        user=env["user"],
        pkey=env["key"],
        num_retries=1,
        **pool,
    )
    print(f"concurrency={client.pool_size}")
    # The hosts share addresses: name each one's remote file by its inventory name.
    args = [{"h": name} for name, _, _ in hosts]

    def run(line, host_args=None):
        """`line` on every host; each host's stdout, read whole before its exit code."""
        output = client.run_command(line, host_args=host_args, stop_on_errors=True)
        client.join(output)
        stdouts = []
        for o in output:
            # Reading stdout to its end first: parallel-ssh's exit code is
            # None for a channel whose EOF it has not seen yet, and behind
            # a delay join() can return before that (parallel-ssh#424).
            stdouts.append("" if o.exception is not None else "".join(o.stdout))
            if o.exception is not None or o.exit_code != 0:
                raise RuntimeError(f"`{line}` on {o.host}: exit {o.exit_code} {o.exception}")
        return stdouts

    started = time.perf_counter()
    if workload == "a":
        run("true")
    else:
        path = "bench-pssh-%(h)s.bin"
        joinall(client.copy_file(payload, path, copy_args=args), raise_error=True)
        size = str(os.path.getsize(payload))
        for (name, _, _), got in zip(hosts, run(f"wc -c < {path}", host_args=args)):
            if got.strip() != size:
                raise RuntimeError(f"{name}: uploaded file has {got.strip()!r} bytes")
        for line in commands(path):
            run(line, host_args=args)
    wall = time.perf_counter() - started
    print(f"op_wall={wall:.4f}")


def main():
    tool, workload, work = sys.argv[1], sys.argv[2], sys.argv[3]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    concurrency = sys.argv[5] if len(sys.argv) > 5 else "default"
    if concurrency != "default" and not concurrency.isdigit():
        raise SystemExit(f"concurrency: default or a number, not {concurrency!r}")
    hosts = read_inventory(work, n)
    env = read_env(work)
    payload = os.path.join(work, "payload.bin")
    {"fabric": fabric, "pssh": pssh}[tool](workload, hosts, concurrency, env, payload)


if __name__ == "__main__":
    main()
