//! What the SMTP test binaries share: a step that adds nodes, the email
//! action, a run context and a scripted SMTP server.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pyscaler_core::testing::{CallLog, Probe};
use pyscaler_core::{Cluster, Context, Effects, Node, NodeAddress, TriggerInfo};
use pyscaler_notify::{Email, Mailer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Adds two nodes; takes them back when undone.
pub(crate) fn launch() -> Probe {
    Probe::new("deploy-ec2-node", &CallLog::default())
        .effects(Effects::says("launch 2 nodes").creating_nodes())
        .adding([
            Node::new("i-0aaa", "web-03")
                .with_instance_id("i-0aaa")
                .with_address(NodeAddress::new("10.0.0.3")),
            Node::new("i-0bbb", "web-04")
                .with_instance_id("i-0bbb")
                .with_address(NodeAddress::new("10.0.0.4")),
        ])
}

pub(crate) fn email(mailer: impl Mailer + 'static) -> Email {
    Email::builder(Arc::new(mailer))
        .from("pyscaler <ops@example.com>")
        .to("oncall@example.com")
        .to("lead@example.com")
        .cc("audit@example.com")
        .build()
        .expect("valid email action")
}

pub(crate) fn context() -> Context {
    Context::new(Cluster::new("web").with_nodes([Node::new("i-0old", "web-01")]))
        .with_trigger(TriggerInfo::new("manual", "asked by alice"))
}

/// A minimal SMTP server: it offers `AUTH` and refuses every login (535);
/// connection `i` answers `RCPT` with `rcpt[i]` (`250 OK` past the list);
/// it accepts data.
pub(crate) async fn scripted_server(rcpt: Vec<&'static str>) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let i = count.fetch_add(1, Ordering::SeqCst);
            let rcpt_reply = rcpt.get(i).copied().unwrap_or("250 2.1.5 OK");
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 scripted ESMTP\r\n").await;
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    if in_data {
                        if line == "." {
                            in_data = false;
                            let _ = write.write_all(b"250 2.0.0 queued as 42\r\n").await;
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply = match verb.as_str() {
                        "EHLO" | "HELO" => "250-scripted\r\n250 AUTH PLAIN LOGIN".to_string(),
                        "AUTH" => "535 5.7.8 Authentication credentials invalid".to_string(),
                        "MAIL" => "250 2.1.0 OK".to_string(),
                        "RCPT" => rcpt_reply.to_string(),
                        "DATA" => {
                            in_data = true;
                            "354 go ahead".to_string()
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            break;
                        }
                        _ => "250 OK".to_string(),
                    };
                    let _ = write.write_all(format!("{reply}\r\n").as_bytes()).await;
                }
            });
        }
    });
    (port, connections)
}
