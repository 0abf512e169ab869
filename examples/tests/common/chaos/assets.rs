//! The campaign's light stand-ins for the Tomcat example's assets: the same
//! pipeline (every action: EC2 and both load balancers, Puppet, a script, an
//! application with a health check from the controller, the cluster update,
//! the mail), with a node's work cut to what a few hundred cycles afford.
//!
//! Each asset reads the campaign's fault flags (files in a folder of the
//! controller's machine, which every node host sees read-only, as a VM
//! sees a shared mount), so a cycle can make Puppet or a script fail, or
//! the application never answer, on the nodes of that cycle only.

use std::path::{Path, PathBuf};

/// The flag that makes the node's Puppet run fail (an `exec` that fails).
pub(crate) const PUPPET_FAILS: &str = "puppet-fails";
/// The flag that makes the configuration script exit 1.
pub(crate) const SCRIPT_FAILS: &str = "script-fails";
/// The flag that makes the application start and never answer.
pub(crate) const NEVER_HEALTHY: &str = "never-healthy";

/// Writes the assets under `dir` (manifest, scripts, the WAR's sources)
/// with the fault flags read from `flags`, and returns `dir`.
pub(crate) fn write(dir: &Path, flags: &Path) -> PathBuf {
    let real = pyscaler_testkit::workspace_root().join("examples/tomcat");
    let flags = flags.display().to_string();
    std::fs::create_dir_all(dir.join("manifests")).expect("the assets' manifests folder");
    std::fs::create_dir_all(dir.join("scripts")).expect("the assets' scripts folder");
    std::fs::create_dir_all(flags.as_str()).expect("the fault flags' folder");
    // Puppet: a file per node (changes applied on its first run), and a
    // failing exec while the flag is up.
    std::fs::write(
        dir.join("manifests/tomcat.pp"),
        format!(
            "# The chaos campaign's manifest (examples/tests/common/chaos/assets.rs).\n\
             file {{ '/etc/pyscaler-chaos': ensure => directory }}\n\
             file {{ '/etc/pyscaler-chaos/os':\n  ensure  => file,\n  \
             content => \"http port ${{facts['tomcat_http_port']}}\\n\",\n}}\n\
             exec {{ 'chaos-puppet-fault':\n  command => '/bin/false',\n  \
             onlyif  => '/usr/bin/test -e {flags}/{PUPPET_FAILS}',\n  \
             path    => ['/usr/bin', '/bin'],\n}}\n"
        ),
    )
    .expect("write the manifest");
    // Tomcat configuration: the options written to the node's own disk.
    std::fs::write(
        dir.join("scripts/jvm-options.sh"),
        format!(
            "#!/bin/sh\n# The chaos campaign's configuration script.\nset -eu\n\
             if [ -e {flags}/{SCRIPT_FAILS} ]; then echo 'jvm-options: failed (chaos)' >&2; exit 1; fi\n\
             mkdir -p /etc/pyscaler-chaos\nprintf '%s\\n' \"$*\" > /etc/pyscaler-chaos/jvm-options\n\
             echo 'jvm-options: changed'\n"
        ),
    )
    .expect("write the configuration script");
    // The application: its page served on the node's port by Python's
    // http.server (started detached, so the session can close; a rerun
    // stops the one its pid file names, never one found by name, which
    // could be another node's), unless the flag says it never becomes
    // healthy.
    std::fs::write(
        dir.join("scripts/deploy-war.sh"),
        format!(
            "#!/bin/sh\n# The chaos campaign's deployment: --port P --timeout T WAR APP TEXT\nset -eu\n\
             port=$2; war=$5; app=$6; text=$7\n\
             [ -s \"$war\" ] || {{ echo \"deploy-war: no WAR at $war\" >&2; exit 1; }}\n\
             if [ -e {flags}/{NEVER_HEALTHY} ]; then echo \"deploy-war: $app started (it will never answer)\"; exit 0; fi\n\
             mkdir -p /srv/chaos/$app\nprintf '<p>%s</p>\\n' \"$text\" > /srv/chaos/$app/index.html\n\
             if [ -s /run/chaos-app.pid ]; then kill \"$(cat /run/chaos-app.pid)\" 2>/dev/null || true; fi\n\
             setsid nohup python3 -m http.server \"$port\" --directory /srv/chaos >/tmp/chaos-app.log 2>&1 </dev/null &\n\
             echo $! > /run/chaos-app.pid\n\
             i=0\nwhile [ $i -lt 100 ]; do\n  \
             if python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/$app/', timeout=1)\" 2>/dev/null; then\n    \
             echo \"deploy-war: serving $app on port $port\"; exit 0\n  fi\n  sleep 0.1; i=$((i + 1))\ndone\n\
             echo \"deploy-war: $app did not start\" >&2; exit 1\n"
        ),
    )
    .expect("write the deployment script");
    for (name, from) in [
        (
            "scripts/cluster-members.sh",
            real.join("scripts/cluster-members.sh"),
        ),
        ("webapp", real.join("webapp")),
    ] {
        let to = dir.join(name);
        if !to.exists() {
            std::os::unix::fs::symlink(&from, &to).expect("link the example's asset");
        }
    }
    dir.to_path_buf()
}

/// Raises (`up`) or lowers a fault flag.
pub(crate) fn flag(flags: &Path, name: &str, up: bool) {
    let path = flags.join(name);
    if up {
        std::fs::write(&path, "chaos\n").expect("raise a fault flag");
    } else {
        let _ = std::fs::remove_file(&path);
    }
}
