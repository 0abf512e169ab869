use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use pyscaler_core::testing::run_step;
use pyscaler_core::{ErrorKind, Node, NodeAddress, Target};

use super::*;
use crate::testing::{ctx_with_nodes, output};
use crate::{MockRemoteShell, UploadOptions};

#[tokio::test]
async fn a_task_runs_per_node_with_its_session() {
    let mut shell = MockRemoteShell::new();
    shell
        .expect_upload()
        .times(3)
        .returning(|_, path, _, UploadOptions { mode, .. }| {
            assert_eq!((path, mode), ("/tmp/app.war", 0o644));
            Ok(())
        });
    shell.expect_exec().returning(|node, cmd| {
        Ok(match cmd.line() {
            "systemctl is-active tomcat9" => output("active\n", "", 0),
            l if l.starts_with("install") && cmd.is_sudo() => output("", "", 0),
            other => panic!("unexpected {other} on {}", node.name),
        })
    });
    shell
        .expect_download()
        .returning(|node, _| Ok(node.name.clone().into_bytes()));
    let task = NodeTask::new("deploy", Arc::new(shell), |s| async move {
        s.put(b"war".to_vec(), "/tmp/app.war", 0o644).await?;
        s.sudo("install -m 644 /tmp/app.war /srv/app.war").await?;
        let status = s.run("systemctl is-active tomcat9").await?;
        let name = s.get("/etc/hostname").await?;
        Ok(format!(
            "{} {}",
            String::from_utf8_lossy(&name),
            status.stdout.trim()
        ))
    });
    let mut ctx = ctx_with_nodes(3);
    let report = run_step(task, Target::Cluster, &mut ctx).await;
    assert!(report.is_success(), "{report:?}");
    let summaries: Vec<&str> = report.steps[0]
        .nodes
        .iter()
        .map(|n| n.summary.as_str())
        .collect();
    assert!(summaries.contains(&"web-01 active"), "{summaries:?}");
}

#[tokio::test]
async fn a_failed_task_is_undone_on_every_node() {
    let mut shell = MockRemoteShell::new();
    shell.expect_exec().returning(|node, cmd| {
        Ok(if cmd.line() == "deploy" && node.name == "web-01" {
            output("", "disk full\n", 1)
        } else {
            output("", "", 0)
        })
    });
    let undone = Arc::new(AtomicUsize::new(0));
    let counter = undone.clone();
    let task = NodeTask::new("deploy", Arc::new(shell), |s| async move {
        s.run("deploy").await?;
        Ok("deployed".to_owned())
    })
    .fan_out(FanOut::new().on_failure(OnNodeFailure::Continue))
    .undo(move |s| {
        let counter = counter.clone();
        async move {
            s.run("rollback").await?;
            counter.fetch_add(1, Ordering::SeqCst);
            Ok("rolled back".to_owned())
        }
    });
    let mut ctx = ctx_with_nodes(3);
    let report = run_step(task, Target::Cluster, &mut ctx).await;
    let error = report.error.as_ref().expect("error");
    assert_eq!(error.node.as_deref(), Some("web-01"));
    assert_eq!(error.kind, ErrorKind::RemoteCommandFailed);
    assert!(error.message.contains("disk full"));
    assert_eq!(undone.load(Ordering::SeqCst), 3);
    assert!(report.undo_succeeded());
}

/// A cluster update: each node gets the member list, from the run's view of the cluster.
#[tokio::test]
async fn a_task_writing_the_member_list_sees_the_new_node_and_not_the_removed_one() {
    let written = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let log = written.clone();
    let mut shell = MockRemoteShell::new();
    shell
        .expect_upload()
        .returning(move |node, path, contents, _| {
            assert_eq!(path, "/etc/app/members");
            log.lock().unwrap().push((
                node.name.clone(),
                String::from_utf8(contents).expect("utf-8"),
            ));
            Ok(())
        });
    let update = NodeTask::new("cluster-update", Arc::new(shell), |s| async move {
        let members: Vec<String> = s
            .step()
            .cluster()
            .nodes()
            .iter()
            .map(|n| n.name.clone())
            .collect();
        s.put(members.join("\n").into_bytes(), "/etc/app/members", 0o644)
            .await?;
        Ok(format!("{} members", members.len()))
    });
    // web-00 and web-01 were there; this run launched web-05 and removed web-00.
    let mut ctx = ctx_with_nodes(2);
    ctx.add_new_nodes([Node::new("i-5", "web-05").with_address(NodeAddress::new("10.0.0.5"))]);
    ctx.remove_node("i-0");
    let report = run_step(update, Target::Cluster, &mut ctx).await;
    assert!(report.is_success(), "{report:?}");
    let mut written = written.lock().unwrap().clone();
    written.sort();
    assert_eq!(
        written,
        [
            ("web-01".to_owned(), "web-01\nweb-05".to_owned()),
            ("web-05".to_owned(), "web-01\nweb-05".to_owned()),
        ]
    );
    assert!(report.steps[0]
        .nodes
        .iter()
        .all(|n| n.summary == "2 members"));
}
