//! The node hosts: each stands apart from the others and from this
//! machine, goes away when removed, and a set leaves nothing behind (not
//! even when its process is killed).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pyscaler_testkit::nodes::NodeHosts;
use pyscaler_testkit::sshd::{generate_key, login_user};

fn address(hosts: &NodeHosts, subnet: u8, host: u8) -> Ipv4Addr {
    let cidr = hosts.subnet_cidr(subnet);
    let net: Ipv4Addr = cidr
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("a subnet CIDR");
    let o = net.octets();
    Ipv4Addr::new(o[0], o[1], o[2], host)
}

fn client_key(dir: &Path) -> (std::path::PathBuf, String) {
    let key = dir.join("client_key");
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(key.with_extension("pub"));
    generate_key(&key, "ed25519");
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("the public key");
    (key, public)
}

/// `ssh` as the login user to `address`, running `command`.
fn ssh(key: &Path, address: Ipv4Addr, command: &str) -> std::process::Output {
    Command::new("ssh")
        .args(["-F", "/dev/null", "-i"])
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("{}@{address}", login_user()))
        .arg(command)
        .output()
        .expect("run ssh")
}

#[test]
fn each_node_host_is_a_machine_of_its_own() {
    let hosts = NodeHosts::start();
    let (key, public) = client_key(hosts.dir());
    let a = hosts.add("i-aaaa", address(&hosts, 0, 4), Some(&public));
    let b = hosts.add("i-bbbb", address(&hosts, 1, 4), Some(&public));

    // Each answers SSH at its own address, with its own host key and name,
    // and lets the key pair's key in.
    assert_ne!(a.host_key(), b.host_key());
    for node in [&a, &b] {
        let out = ssh(&key, node.address(), "hostname; id -un");
        assert!(
            out.status.success(),
            "ssh to {}: {}\n{}",
            node.address(),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(node.log()).unwrap_or_default()
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(node.hostname()), "{text}");
        assert!(text.contains(&login_user()), "{text}");
    }
    // Another key is refused.
    let other = hosts.dir().join("other");
    std::fs::create_dir_all(&other).expect("a folder");
    let (stranger, _) = client_key(&other);
    assert!(!ssh(&stranger, a.address(), "true").status.success());

    // What one node writes, only it sees; the machine's packages are read-only.
    let wrote =
        a.exec("mkdir -p /etc/pyscaler && echo a > /etc/pyscaler/mark && echo a > /tmp/mark");
    assert!(wrote.status.success(), "{wrote:?}");
    assert_eq!(a.read("/etc/pyscaler/mark").as_deref(), Some("a\n"));
    assert_eq!(b.read("/etc/pyscaler/mark"), None);
    assert_eq!(b.read("/tmp/mark"), None);
    assert!(!Path::new("/etc/pyscaler/mark").exists());
    assert!(!a.exec("touch /usr/bin/pyscaler-test").status.success());
    // Each has only its own address and no route anywhere else.
    let routes = a.exec("ip -4 route; ip -4 -o addr show");
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    assert!(!routes.contains("default"), "{routes}");
    assert!(routes.contains(&a.address().to_string()), "{routes}");
    assert!(!routes.contains(&b.address().to_string()), "{routes}");

    // A fault on one node leaves the other alone.
    a.stop_sshd();
    assert!(!a.answers_ssh());
    assert!(b.answers_ssh());
    assert!(a.start_sshd(), "sshd answers again");
    a.fill_disk();
    assert!(
        !a.exec("echo x > /tmp/more").status.success(),
        "a full disk"
    );
    assert!(b.exec("echo x > /tmp/more").status.success());
    a.free_disk();
    assert!(a.exec("echo x > /tmp/more").status.success());

    // A removed node stops answering; the other goes on.
    let footprint = hosts.footprint();
    hosts.remove("i-aaaa");
    assert!(
        !a.answers_ssh(),
        "{} still answers after its removal: {:?}",
        a.address(),
        Command::new("sh")
            .args(["-c", "ip netns list; ip -br link; ss -tlnp | grep ':22 '"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    );
    assert!(b.answers_ssh());
    drop(hosts);
    let left = footprint.left();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The child of [`a_set_whose_process_died_is_removed_by_the_next`]: starts
/// a set and a node, writes what it made, and waits to be killed (bounded).
#[test]
fn crashing_child() {
    let Ok(out) = std::env::var("PYSCALER_NODES_CHILD") else {
        return;
    };
    let hosts = NodeHosts::start();
    hosts.add("i-child", address(&hosts, 0, 9), None);
    let f = hosts.footprint();
    let text = format!(
        "{}\n{}\n{}\n",
        f.netns.join(" "),
        f.links.join(" "),
        f.dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    std::fs::write(format!("{out}.tmp"), text).expect("write the footprint");
    std::fs::rename(format!("{out}.tmp"), &out).expect("publish the footprint");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_set_whose_process_died_is_removed_by_the_next() {
    let out = std::env::temp_dir().join(format!("pyscaler-nodes-child-{}", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let mut child = Command::new(std::env::current_exe().expect("this test's binary"))
        .args(["--exact", "crashing_child", "--nocapture"])
        .env("PYSCALER_NODES_CHILD", &out)
        .spawn()
        .expect("start the child");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !out.exists() {
        assert!(Instant::now() < deadline, "the child made no node in 30 s");
        assert!(
            child.try_wait().expect("the child's status").is_none(),
            "the child ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("kill the child");
    let _ = child.wait();
    let text = std::fs::read_to_string(&out).expect("the child's footprint");
    let _ = std::fs::remove_file(&out);
    let mut lines = text.lines();
    let footprint = pyscaler_testkit::nodes::Footprint {
        netns: words(lines.next()),
        links: words(lines.next()),
        dirs: words(lines.next()).into_iter().map(Into::into).collect(),
        pids: Vec::new(),
    };
    assert!(!footprint.netns.is_empty());
    assert!(
        !footprint.left().is_empty(),
        "the killed child left its node"
    );
    // The node's own namespace, link and folder: the next set removes them
    // when it starts (it may take the same slot, and make that slot's
    // bridge and folder again).
    let node = pyscaler_testkit::nodes::Footprint {
        netns: footprint.netns.clone(),
        links: footprint.links[1..].to_vec(),
        dirs: footprint.dirs[1..].to_vec(),
        pids: Vec::new(),
    };
    let next = NodeHosts::start();
    let left = node.left();
    assert!(left.is_empty(), "the next set did not remove: {left:?}");
    drop(next);
    let left = footprint.left();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn words(line: Option<&str>) -> Vec<String> {
    line.unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}
