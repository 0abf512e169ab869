//! A host of its own for every instance moto launches: the local stack's
//! stand-in for separate VMs.
//!
//! [`NodeHosts::start`] takes one of the machine's node slots and makes a
//! bridge for it holding the controller's side of the slot's two subnets
//! ([`NodeHosts::subnet_cidr`]: `172.31.{200+2s}.0/24` and the next, inside
//! moto's default VPC, a test range this harness owns); [`NodeHosts::follow`]
//! then watches moto and gives every running instance in those subnets a
//! [`NodeHost`]: its own network namespace holding the private IP moto
//! assigned (joined to the bridge by a veth pair, no route anywhere else),
//! its own sshd with its own host key and the instance's key pair
//! authorized for the login user, and its own disk through a mount
//! namespace (writable layers over `/etc`, `/var`, `/usr/local`, `/home`,
//! a private `/tmp` and `/run`; the installed packages visible read-only),
//! so Puppet's `file`, `exec` and `service` resources and each node's
//! Tomcat act on that node alone. A node goes away when its instance is
//! terminated (or stopped): its processes killed, its namespace and link
//! removed, so its address stops answering.
//!
//! How it learns about instances: by polling moto's DescribeInstances
//! (every 200 ms), not by watching the fault proxy's answers, because moto
//! is the one source that sees every launch and termination whichever way
//! it was asked for (through a proxy or not, an answer lost after the call
//! took effect, a test's own SDK call).
//!
//! Everything made is noted in a record file of the slot before it is
//! made; dropping the set removes it all, and the next set to take a slot
//! whose owner died removes what the record names first.
//!
//! Needs root, `ip` (iproute2), `unshare` and `nsenter` (util-linux), and
//! the kernel's overlay file system; [`NodeHosts::start`] panics with a
//! message naming what is missing.

mod node;
mod record;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use node::NodeHost;
use record::Record;

use crate::lock_ignoring_poison;
use crate::moto::MotoServer;

/// How many node slots the machine has (sets running at once).
const SLOTS: u8 = 27;
/// How often the watcher asks moto for its instances.
const POLL: Duration = Duration::from_millis(200);

/// The node hosts of one local stack; everything they made is removed when
/// dropped.
#[derive(Debug)]
pub struct NodeHosts {
    inner: Arc<Inner>,
    watcher: Mutex<Option<(Arc<AtomicBool>, JoinHandle<()>)>>,
}

#[derive(Debug)]
struct Inner {
    slot: u8,
    _lock: File,
    record: Record,
    bridge: String,
    dir: PathBuf,
    user: String,
    disk_size: String,
    seq: AtomicU32,
    nodes: Mutex<BTreeMap<String, Arc<NodeHost>>>,
    log: Mutex<File>,
}

/// What a set made, to check after it is dropped that nothing is left.
#[derive(Debug, Clone, Default)]
pub struct Footprint {
    /// Network namespaces.
    pub netns: Vec<String>,
    /// Links in the controller's namespace (the bridge, the veths' ends).
    pub links: Vec<String>,
    /// Folders.
    pub dirs: Vec<PathBuf>,
    /// Processes.
    pub pids: Vec<u32>,
}

impl Footprint {
    /// What of it still exists on the machine (empty: nothing left).
    pub fn left(&self) -> Vec<String> {
        let mut left = Vec::new();
        left.extend(
            self.netns
                .iter()
                .filter(|n| record::netns_exists(n))
                .map(|n| format!("netns {n}")),
        );
        left.extend(
            self.links
                .iter()
                .filter(|l| record::link_exists(l))
                .map(|l| format!("link {l}")),
        );
        left.extend(
            self.dirs
                .iter()
                .filter(|d| d.exists())
                .map(|d| format!("dir {}", d.display())),
        );
        left.extend(
            self.pids
                .iter()
                .filter(|p| record::is_alive(**p))
                .map(|p| format!("pid {p}")),
        );
        left
    }
}

impl NodeHosts {
    /// Takes a free node slot, removes what an earlier set on any free slot
    /// left behind, and makes the slot's bridge.
    ///
    /// # Panics
    /// When a prerequisite is missing (root, `ip`, `unshare`, `nsenter`,
    /// sshd, the overlay file system), naming it; when every slot is taken.
    pub fn start() -> Self {
        Self::start_with_disk("512m")
    }

    /// [`start`](Self::start) with each node's disk `size` (tmpfs syntax: `256m`).
    pub fn start_with_disk(size: &str) -> Self {
        check_prerequisites();
        let user = crate::sshd::login_user();
        let (slot, lock, cleaned) = take_slot();
        let record = Record::of_slot(slot);
        let dir = crate::workspace_root()
            .join("target")
            .join("services")
            .join(format!("nodes-slot{slot}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let log = File::create(dir.join("nodes.log"))
            .unwrap_or_else(|e| panic!("create {}: {e}", dir.join("nodes.log").display()));
        let bridge = format!("psbr{slot}");
        record.note("link", &bridge);
        let made = node::ip(&["link", "add", &bridge, "type", "bridge"])
            .and_then(|()| {
                (0..2).try_for_each(|n| {
                    let gateway = format!("{}/24", gateway(slot, n));
                    node::ip(&["addr", "add", &gateway, "dev", &bridge])
                })
            })
            .and_then(|()| node::ip(&["link", "set", &bridge, "up"]));
        if let Err(e) = made {
            record.clean_up();
            panic!("make the node bridge {bridge}: {e}");
        }
        let inner = Inner {
            slot,
            _lock: lock,
            record,
            bridge,
            dir,
            user,
            disk_size: size.to_owned(),
            seq: AtomicU32::new(0),
            nodes: Mutex::new(BTreeMap::new()),
            log: Mutex::new(log),
        };
        for line in cleaned {
            inner.say(&format!("removed a leftover of an earlier run: {line}"));
        }
        inner.say(&format!(
            "slot {slot}: bridge {} with {} and {}",
            inner.bridge,
            gateway(slot, 0),
            gateway(slot, 1)
        ));
        Self {
            inner: Arc::new(inner),
            watcher: Mutex::new(None),
        }
    }

    /// The CIDR of the slot's subnet `n` (0 or 1) for moto's
    /// `CreateSubnet`: the instances launched in it get node hosts.
    ///
    /// # Panics
    /// When `n` is not 0 or 1.
    pub fn subnet_cidr(&self, n: u8) -> String {
        assert!(n < 2, "a node slot has two subnets, 0 and 1");
        format!("172.31.{}.0/24", block(self.inner.slot, n))
    }

    /// The controller's address on subnet `n` (the bridge's).
    pub fn gateway(&self, n: u8) -> Ipv4Addr {
        gateway(self.inner.slot, n)
    }

    /// Starts watching `moto`: each running instance in the slot's subnets
    /// gets a node host (its key pair's public key, from DescribeKeyPairs,
    /// authorized); each node whose instance is no longer running goes.
    pub fn follow(&self, moto: &MotoServer) {
        let endpoint = moto.endpoint_url();
        let stop = Arc::new(AtomicBool::new(false));
        let inner = self.inner.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("node-hosts".into())
            .spawn(move || watch(&inner, &endpoint, &flag))
            .expect("start the node hosts' watcher thread");
        *lock_ignoring_poison(&self.watcher) = Some((stop, thread));
    }

    /// Starts a node host for `instance_id` at `address` (in one of the
    /// slot's subnets) by hand, with `authorized_key` (an OpenSSH public
    /// key line) for the login user.
    ///
    /// # Panics
    /// When the address is outside the slot's subnets or the node cannot start.
    pub fn add(
        &self,
        instance_id: &str,
        address: Ipv4Addr,
        authorized_key: Option<&str>,
    ) -> Arc<NodeHost> {
        self.inner
            .add(instance_id, address, authorized_key)
            .unwrap_or_else(|e| panic!("start a node host for {instance_id}: {e}"))
    }

    /// Stops and removes the node host of `instance_id` (if there is one).
    pub fn remove(&self, instance_id: &str) {
        self.inner.remove(instance_id);
    }

    /// The node host of `instance_id`, if it runs.
    pub fn node(&self, instance_id: &str) -> Option<Arc<NodeHost>> {
        lock_ignoring_poison(&self.inner.nodes)
            .get(instance_id)
            .cloned()
    }

    /// Every running node host, by instance id.
    pub fn nodes(&self) -> Vec<Arc<NodeHost>> {
        lock_ignoring_poison(&self.inner.nodes)
            .values()
            .cloned()
            .collect()
    }

    /// Waits (at most `within`) until `instance_id` has a node host.
    ///
    /// # Panics
    /// When it has none by then, with the harness's log.
    pub fn wait_for(&self, instance_id: &str, within: Duration) -> Arc<NodeHost> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(node) = self.node(instance_id) {
                return node;
            }
            assert!(
                Instant::now() < deadline,
                "no node host for {instance_id} within {within:?}; {}:\n{}",
                self.log().display(),
                std::fs::read_to_string(self.log()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most `within`) until `instance_id` has no node host; true if so.
    pub fn wait_until_gone(&self, instance_id: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.node(instance_id).is_some() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// The harness's log of node hosts started and stopped.
    pub fn log(&self) -> PathBuf {
        self.inner.dir.join("nodes.log")
    }

    /// The set's folder under `target/services/`.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Everything the set has made so far, to check later that it is gone
    /// (its bridge and its folder first, then its nodes' links and folders).
    pub fn footprint(&self) -> Footprint {
        let nodes = self.nodes();
        let mut footprint = Footprint {
            netns: nodes.iter().map(|n| n.netns().to_owned()).collect(),
            links: vec![self.inner.bridge.clone()],
            dirs: vec![self.inner.dir.clone()],
            pids: nodes.iter().flat_map(|n| n.pids()).collect(),
        };
        footprint
            .dirs
            .extend(nodes.iter().map(|n| n.dir().to_path_buf()));
        footprint
            .links
            .extend(nodes.iter().map(|n| link_name(self.inner.slot, n.netns())));
        footprint
    }
}

impl Drop for NodeHosts {
    fn drop(&mut self) {
        if let Some((stop, thread)) = lock_ignoring_poison(&self.watcher).take() {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
        let ids: Vec<String> = lock_ignoring_poison(&self.inner.nodes)
            .keys()
            .cloned()
            .collect();
        for id in ids {
            self.inner.remove(&id);
        }
        record::remove_link(&self.inner.bridge);
        let _ = std::fs::remove_dir_all(&self.inner.dir);
        // All removed: what is left in the record would only be re-tried.
        self.inner.record.clean_up();
    }
}

impl Inner {
    fn say(&self, line: &str) {
        let mut log = lock_ignoring_poison(&self.log);
        let _ = writeln!(log, "{} {line}", chrono_like_now());
    }

    fn add(
        &self,
        instance_id: &str,
        address: Ipv4Addr,
        authorized_key: Option<&str>,
    ) -> Result<Arc<NodeHost>, String> {
        let octets = address.octets();
        if octets[0] != 172
            || octets[1] != 31
            || !(0..2).any(|n| octets[2] == block(self.slot, n))
            || octets[3] < 2
        {
            return Err(format!(
                "{address} is outside slot {}'s subnets 172.31.{}.0/24 and 172.31.{}.0/24",
                self.slot,
                block(self.slot, 0),
                block(self.slot, 1)
            ));
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let netns = format!("pyscaler-s{}-{n}", self.slot);
        let node = node::NodeHost::start(
            node::Spec {
                instance_id,
                address,
                prefix: 24,
                authorized_key,
                link: link_name(self.slot, &netns),
                netns,
                bridge: &self.bridge,
                dir: self.dir.join(instance_id),
                user: &self.user,
                disk_size: &self.disk_size,
            },
            &self.record,
        )?;
        let node = Arc::new(node);
        self.say(&format!(
            "started {instance_id} at {address} ({}) in {} ms",
            node.netns(),
            node.started_in().as_millis()
        ));
        lock_ignoring_poison(&self.nodes).insert(instance_id.to_owned(), node.clone());
        Ok(node)
    }

    fn remove(&self, instance_id: &str) {
        let node = lock_ignoring_poison(&self.nodes).remove(instance_id);
        if let Some(node) = node {
            node.remove();
            self.say(&format!("stopped {instance_id} at {}", node.address()));
        }
    }
}

/// The host end of a node's veth pair: `ps<slot>h<n>` (at most 15 bytes).
fn link_name(slot: u8, netns: &str) -> String {
    let n = netns.rsplit('-').next().unwrap_or("0");
    format!("ps{slot}h{n}")
}

/// The third octet of slot `slot`'s subnet `n`.
fn block(slot: u8, n: u8) -> u8 {
    200 + 2 * slot + n
}

fn gateway(slot: u8, n: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 31, block(slot, n), 1)
}

/// Seconds since the epoch with milliseconds, for the log.
fn chrono_like_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", now.as_secs(), now.subsec_millis())
}

/// Takes the first free slot; on the way, removes what any free slot's
/// record names (its owner died). Returns the slot, its lock and what was removed.
fn take_slot() -> (u8, File, Vec<String>) {
    let mut cleaned = Vec::new();
    let mut mine = None;
    for slot in 0..SLOTS {
        let path = std::env::temp_dir().join(format!("pyscaler-nodes-slot-{slot}.lock"));
        let Ok(file) = File::create(&path) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue;
        }
        let record = Record::of_slot(slot);
        if !record.is_empty() {
            cleaned.extend(
                record
                    .clean_up()
                    .into_iter()
                    .map(|l| format!("slot {slot}: {l}")),
            );
        }
        if mine.is_none() {
            mine = Some((slot, file));
        }
    }
    let (slot, file) = mine.unwrap_or_else(|| {
        panic!("all {SLOTS} node slots are taken (by other test processes on this machine)")
    });
    (slot, file, cleaned)
}

fn check_prerequisites() {
    assert!(
        crate::sshd::is_root(),
        "node hosts need root (network namespaces, mounts): run the tests as root"
    );
    let mut missing = Vec::new();
    for (program, package) in [
        ("ip", "iproute2"),
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("ssh-keygen", "openssh-client"),
    ] {
        let found = std::process::Command::new(program)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !found {
            missing.push(format!("{program} (Debian's {package})"));
        }
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        missing.push("/usr/sbin/sshd (Debian's openssh-server)".into());
    }
    let overlay = std::fs::read_to_string("/proc/filesystems")
        .map(|f| f.lines().any(|l| l.trim_end().ends_with("overlay")))
        .unwrap_or(false);
    if !overlay {
        missing.push("the kernel's overlay file system (modprobe overlay)".into());
    }
    assert!(
        missing.is_empty(),
        "node hosts need {}: run scripts/setup",
        missing.join(", ")
    );
}

/// The watcher: keeps the node hosts in step with moto's running instances.
fn watch(inner: &Inner, endpoint: &str, stop: &AtomicBool) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            inner.say(&format!("cannot start the watcher's runtime: {e}"));
            return;
        }
    };
    let client = runtime.block_on(async {
        let sdk = crate::moto::sdk_config_for(endpoint).await;
        aws_sdk_ec2::Client::new(&sdk)
    });
    let mut keys: HashMap<String, Option<String>> = HashMap::new();
    let mut failed: HashMap<String, String> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        match runtime.block_on(running_instances(&client)) {
            Ok(running) => {
                let ours: Vec<&Running> = running
                    .iter()
                    .filter(|r| {
                        let o = r.address.octets();
                        o[0] == 172 && o[1] == 31 && (0..2).any(|n| o[2] == block(inner.slot, n))
                    })
                    .collect();
                let known: Vec<String> =
                    lock_ignoring_poison(&inner.nodes).keys().cloned().collect();
                for id in &known {
                    if !ours.iter().any(|r| &r.instance_id == id) {
                        inner.remove(id);
                    }
                }
                for r in ours {
                    if known.contains(&r.instance_id) || failed.contains_key(&r.instance_id) {
                        continue;
                    }
                    let key = match &r.key_name {
                        Some(name) => keys
                            .entry(name.clone())
                            .or_insert_with(|| runtime.block_on(public_key(&client, name)))
                            .clone(),
                        None => None,
                    };
                    if let Err(e) = inner.add(&r.instance_id, r.address, key.as_deref()) {
                        inner.say(&format!("could not start {}: {e}", r.instance_id));
                        failed.insert(r.instance_id.clone(), e);
                    }
                }
            }
            Err(e) => inner.say(&format!("DescribeInstances failed: {e}")),
        }
        std::thread::sleep(POLL);
    }
}

#[derive(Debug)]
struct Running {
    instance_id: String,
    address: Ipv4Addr,
    key_name: Option<String>,
}

async fn running_instances(client: &aws_sdk_ec2::Client) -> Result<Vec<Running>, String> {
    let out = client
        .describe_instances()
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| {
            i.state().and_then(|s| s.name())
                == Some(&aws_sdk_ec2::types::InstanceStateName::Running)
        })
        .filter_map(|i| {
            Some(Running {
                instance_id: i.instance_id()?.to_owned(),
                address: i.private_ip_address()?.parse().ok()?,
                key_name: i.key_name().map(str::to_owned),
            })
        })
        .collect())
}

/// The public key of key pair `name` (`ssh-ed25519 AAAA…`), if moto has it.
async fn public_key(client: &aws_sdk_ec2::Client, name: &str) -> Option<String> {
    let out = client
        .describe_key_pairs()
        .key_names(name)
        .include_public_key(true)
        .send()
        .await
        .ok()?;
    out.key_pairs()
        .first()
        .and_then(|k| k.public_key())
        .map(|k| format!("{}\n", k.trim()))
}
