//! The harness's latency proxy as a process, for the SSH fan-out benchmark
//! (`BENCH_DELAYS="25 50" benches/ssh_fanout/run`): every tool reaches the sshds
//! through it.
//!
//! `latency_proxy <ports-file> <one-way-ms> <upstream-port>...` listens on a
//! free loopback port in front of each upstream (each on 127.0.0.1), delays
//! every segment by the one-way delay, writes the listening ports (one per
//! line, in the upstreams' order) to `<ports-file>` once it listens, and
//! runs until SIGTERM or SIGINT. It prints how many connections and round
//! trips it relayed when it stops.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use pyscaler_testkit::latency::{round_trips, LatencyProxy, Segment};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        eprintln!("usage: latency_proxy <ports-file> <one-way-ms> <upstream-port>...");
        ExitCode::from(2)
    };
    let (Some(file), Some(ms)) = (args.first(), args.get(1)) else {
        return usage();
    };
    let Ok(ms) = ms.parse::<u64>() else {
        return usage();
    };
    let upstreams: Result<Vec<u16>, _> = args[2..].iter().map(|p| p.parse::<u16>()).collect();
    let Ok(upstreams) = upstreams else {
        return usage();
    };
    if upstreams.is_empty() {
        return usage();
    }
    let start = || {
        let proxy = LatencyProxy::start(&upstreams, Duration::from_millis(ms));
        let ports: Vec<String> = proxy.ports().iter().map(u16::to_string).collect();
        pyscaler_benches::write_whole(&PathBuf::from(file), &(ports.join("\n") + "\n"))?;
        eprintln!("latency_proxy: {ms} ms each way, ports {}", ports.join(","));
        Ok(proxy)
    };
    pyscaler_benches::serve_until_signalled("latency_proxy", start, |proxy| {
        let mut by_connection: BTreeMap<u32, Vec<Segment>> = BTreeMap::new();
        for s in proxy.segments() {
            by_connection.entry(s.connection).or_default().push(s);
        }
        let trips: usize = by_connection.values().map(|c| round_trips(c)).sum();
        eprintln!(
            "latency_proxy: relayed {} connections, {trips} round trips waited",
            by_connection.len()
        );
    })
}
