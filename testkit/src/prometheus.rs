//! Debian's Prometheus server and Pushgateway on free loopback ports, for the
//! metric-source tests: the server scrapes the gateway every second (with
//! `honor_labels`), so a value a test pushes is queryable a few seconds
//! later, with the labels it was pushed with. Config and data live under
//! `target/services/prometheus-<port>/`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{free_port, service_dir, wait_for_port, ServiceProcess};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PUSHGATEWAY: &str = "/usr/bin/prometheus-pushgateway";

/// A running Prometheus server and the Pushgateway it scrapes, stopped when dropped.
#[derive(Debug)]
pub struct Prometheus {
    // Dropped in this order: the server first, then the gateway it scrapes.
    server: ServiceProcess,
    gateway: ServiceProcess,
    port: u16,
    gateway_port: u16,
}

fn require(binary: &str, package: &str) {
    assert!(
        Path::new(binary).exists(),
        "{binary} is missing: install Debian's {package} (scripts/setup does)"
    );
}

impl Prometheus {
    /// Starts the Pushgateway and a Prometheus server scraping it every
    /// second, and waits until both listen.
    pub fn start() -> Self {
        Self::start_scraping(&[])
    }

    /// As [`start`](Self::start), and the server also scrapes each
    /// `(job, address)` of `targets` every second (a program serving its
    /// own metrics there, such as `tomcat_cluster --metrics-listen`); a
    /// target nothing listens on yet is simply down until it does.
    pub fn start_scraping(targets: &[(&str, SocketAddr)]) -> Self {
        require(PROMETHEUS, "prometheus");
        require(PUSHGATEWAY, "prometheus-pushgateway");
        let gateway_port = free_port();
        let gateway_dir = service_dir("pushgateway", gateway_port);
        let mut gateway = Command::new(PUSHGATEWAY);
        gateway
            .arg(format!("--web.listen-address=127.0.0.1:{gateway_port}"))
            .arg("--log.level=warn");
        let gateway = ServiceProcess::spawn("pushgateway", &gateway_dir, gateway);
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], gateway_port)),
            Duration::from_secs(20),
            &gateway.log,
        );

        let port = free_port();
        let dir = service_dir("prometheus", port);
        let config = dir.join("prometheus.yml");
        let mut yaml = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: pushgateway\n    honor_labels: true\n    \
             static_configs:\n      - targets: ['127.0.0.1:{gateway_port}']\n"
        );
        for (job, addr) in targets {
            yaml.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n"
            ));
        }
        std::fs::write(&config, yaml).unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        let mut server = Command::new(PROMETHEUS);
        server
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let server = ServiceProcess::spawn("prometheus", &dir, server);
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(30),
            &server.log,
        );
        // It listens before it can answer queries (HTTP 503 until then).
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_status(port, "GET", "/-/ready", "") != Some(200) {
            assert!(
                Instant::now() < deadline,
                "Prometheus never became ready; see {}",
                server.log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            server,
            gateway,
            port,
            gateway_port,
        }
    }

    /// The server's base URL (`http://127.0.0.1:PORT`).
    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The Pushgateway's address (`http://127.0.0.1:<port>`): push with
    /// `PUT <url>/metrics/job/<job>` and Prometheus' text format.
    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Replaces what the job `job` pushed with `text` (Prometheus' text
    /// format, `name{label="v"} 1.5` a line) on the Pushgateway.
    pub fn push(&self, job: &str, text: &str) {
        let body = if text.ends_with('\n') {
            text.to_owned()
        } else {
            format!("{text}\n")
        };
        let status = http_status(
            self.gateway_port,
            "PUT",
            &format!("/metrics/job/{job}"),
            &body,
        );
        assert!(
            matches!(status, Some(200 | 202)),
            "the pushgateway refused the push ({status:?}); see {}",
            self.gateway.log.display()
        );
    }

    /// Deletes everything the job `job` pushed: Prometheus' next scrape no
    /// longer sees those series and marks them stale.
    pub fn delete(&self, job: &str) {
        let status = http_status(
            self.gateway_port,
            "DELETE",
            &format!("/metrics/job/{job}"),
            "",
        );
        assert!(
            matches!(status, Some(200 | 202)),
            "the pushgateway refused the delete ({status:?}); see {}",
            self.gateway.log.display()
        );
    }

    /// Stops the server (the gateway keeps running): for a test of a
    /// Prometheus that went away.
    pub fn stop_server(&mut self) {
        self.server.stop();
    }

    /// The server's log file.
    pub fn log(&self) -> &Path {
        &self.server.log
    }
}

/// The status of one plain HTTP/1.1 request to `127.0.0.1:port`, or `None`
/// when nothing answered (bounded by 10 s).
fn http_status(port: u16, method: &str, path: &str, body: &str) -> Option<u16> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: text/plain; version=0.0.4\r\nContent-Length: {len}\r\n\
         Connection: close\r\n\r\n{body}",
        len = body.len()
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
