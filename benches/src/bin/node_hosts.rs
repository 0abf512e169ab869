//! What a node host costs (issue 16): the time from "the instance runs" to
//! its own sshd answering at its private IP, for nodes started one after
//! another by the harness (`pyscaler_testkit::nodes`), the memory of an
//! idle node (its holder and sshd), and the time to remove one. The memory
//! of a node with Tomcat running comes from the demo and the node faults
//! test (`NodeHost::rss_kib`), which configure real Tomcats.
//!
//! `cargo run --release -p pyscaler-benches --bin node_hosts [nodes]` (as
//! root) prints min, median and max over `nodes` (default 10).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use pyscaler_testkit::nodes::NodeHosts;

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    match (v.first(), v.get(v.len() / 2), v.last()) {
        (Some(min), Some(median), Some(max)) => {
            format!("{:8.1} {:8.1} {:8.1}", ms(*min), ms(*median), ms(*max))
        }
        _ => "(none)".into(),
    }
}

fn main() {
    let n: u8 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10)
        .clamp(1, 200);
    let began = Instant::now();
    let hosts = NodeHosts::start();
    let set_up = began.elapsed();
    let net: Ipv4Addr = hosts
        .subnet_cidr(0)
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("the slot's subnet");
    let o = net.octets();
    let mut up = Vec::new();
    let mut rss = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..n {
        let node = hosts.add(
            &format!("i-bench{i:04}"),
            Ipv4Addr::new(o[0], o[1], o[2], 4 + i),
            None,
        );
        up.push(node.started_in());
        nodes.push(node);
    }
    for node in &nodes {
        rss.push(node.rss_kib());
    }
    let mut down = Vec::new();
    for node in &nodes {
        let t = Instant::now();
        hosts.remove(node.instance_id());
        down.push(t.elapsed());
    }
    let t = Instant::now();
    drop(hosts);
    let teardown = t.elapsed();
    rss.sort_unstable();
    println!("node hosts: {n} started one after another (ms)");
    println!("{:<36} {:>8} {:>8} {:>8}", "", "min", "median", "max");
    println!("{:<36} {}", "running -> its sshd answers", stats(up));
    println!("{:<36} {}", "removed (processes, netns, link)", stats(down));
    println!(
        "idle node memory (holder + sshd): median {} KiB",
        rss.get(rss.len() / 2).copied().unwrap_or_default()
    );
    println!(
        "set up (slot, bridge) {:.1} ms; tear down {:.1} ms",
        set_up.as_secs_f64() * 1000.0,
        teardown.as_secs_f64() * 1000.0
    );
}
