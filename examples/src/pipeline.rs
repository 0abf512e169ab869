//! The Tomcat cluster's pipelines: the scale-out (every step of the
//! deployment table in `docs/scaling.rst`) and the scale-in, composed from
//! pyscaler's actions.

use std::path::PathBuf;
use std::sync::Arc;

use pyscaler_aws::{Aws, DeployEc2Node, RemoveEc2Node};
use pyscaler_core::{
    async_trait, Action, ActionExt, Context, Effects, Error, ErrorKind, Journal, NodeFailure,
    Pipeline, Result, RetryPolicy, Target,
};
use pyscaler_notify::{Email, Mailer};
use pyscaler_ssh::{LocalScript, NodeTask, OsConfiguration, RemoteShell};

use crate::config::TomcatClusterConfig;
use crate::http;
use crate::war::build_war;

/// The providers the pipeline's actions are built with: the real ones in
/// `tomcat_cluster`, mocks in an application's own tests.
#[derive(Clone)]
pub struct Providers {
    /// EC2, the classic load balancer (when the profile names one), and the
    /// cluster's profile.
    pub aws: Aws,
    /// SSH to the nodes.
    pub shell: Arc<dyn RemoteShell>,
    /// Mail.
    pub mailer: Arc<dyn Mailer>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers").finish_non_exhaustive()
    }
}

/// The Tomcat manager's password, read from the environment variable the
/// config names. Never logged.
fn manager_password(config: &TomcatClusterConfig) -> Result<String> {
    let var = &config.tomcat.manager_password_env;
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(Error::InvalidConfig(format!(
            "set the Tomcat manager's password in the environment variable {var}"
        ))),
    }
}

/// Builds the scale-out pipeline of the Tomcat cluster.
///
/// # Errors
/// A configuration problem (an unreadable asset, a missing password, an
/// invalid profile), found before anything runs.
pub fn tomcat_pipeline(
    config: &TomcatClusterConfig,
    providers: &Providers,
    journal: Option<Arc<dyn Journal>>,
) -> Result<Pipeline> {
    let t = &config.tomcat;
    let shell = providers.shell.clone();

    // 1-2. A new VM on EC2, behind the Elastic Load Balancer.
    let deploy = DeployEc2Node::builder(&providers.aws)
        .count(config.deploy.count)
        .wait_for_ssh(config.deploy.ssh_within)
        .in_service_within(config.deploy.in_service_within)
        .build()?;

    // 3. Operating system configuration and provisioning: Puppet installs Java
    //    and Tomcat and manages their configuration.
    let os = OsConfiguration::builder(shell.clone())
        .manifest_file(config.asset("manifests/tomcat.pp"))
        .sudo(t.sudo)
        .timeout(t.puppet_timeout)
        .fact("tomcat_http_port", t.http_port.to_string())
        .secret_fact("tomcat_manager_password", manager_password(config)?)
        .build()?;

    // 4. Tomcat configuration: JVM options, restarting Tomcat only when they change.
    let tomcat_config = LocalScript::builder(shell.clone())
        .name("tomcat-config")
        .file(config.asset("scripts/jvm-options.sh"))
        .args([
            "--heap",
            t.heap.as_str(),
            "--jmx-port",
            &t.jmx_port.to_string(),
        ])
        .sudo(t.sudo)
        .build()?;

    // 5. Application deployment: the WAR is built here, uploaded, deployed,
    //    and checked from the controller over HTTP.
    let app_deploy = deploy_app(config, shell.clone())?;

    // 6. Cluster update: every node's member list gets the new nodes.
    let cluster_update = ClusterUpdate {
        shell: shell.clone(),
        script: config.asset("scripts/cluster-members.sh"),
        sudo: t.sudo,
    };

    // 7. Notification, after success and after failure.
    let email = Email::builder(providers.mailer.clone())
        .addresses_from(&config.smtp)
        .build()?;

    let mut builder = Pipeline::builder("tomcat-scale-out");
    if let Some(journal) = journal {
        builder = builder.journal(journal);
    }
    // Each step is named after its action (`deploy-ec2-node`,
    // `os-configuration`, `tomcat-config`, `app-deploy`, `cluster-update`,
    // `email`). The names pin the journal's entries: recovery finds a dead
    // run's steps by name, so rename a step only when no run of it is
    // unfinished (`Step::named` is for an action used twice).
    builder
        // The launch carries a ClientToken derived from the run and step, so a retry never launches twice.
        .step(deploy.on(Target::None).retry(RetryPolicy::attempts(3)))
        // Each step below is safe to run again, so a run whose controller
        // died can be resumed (`tomcat_cluster recover --resume`): Puppet
        // converges (OsConfiguration says so itself), the JVM options script
        // restarts Tomcat only on a change, the WAR deployment replaces the
        // application, the cluster update rewrites the whole list.
        .step(os.on(Target::NewNodes))
        .step(tomcat_config.on(Target::NewNodes).repeatable(true))
        .step(app_deploy.on(Target::NewNodes).repeatable(true))
        .step(cluster_update.on(Target::Cluster))
        .finally(email.on(Target::None))
        .build()
}

/// Builds the scale-in pipeline of the Tomcat cluster: the newest node
/// (never a protected one, as many as the decision asks for) leaves the
/// load balancer, drains, and is terminated; then every remaining node's
/// member list is rewritten; the mail goes out whatever happened.
///
/// # Errors
/// A configuration problem, found before anything runs.
pub fn scale_in_pipeline(
    config: &TomcatClusterConfig,
    providers: &Providers,
    journal: Option<Arc<dyn Journal>>,
) -> Result<Pipeline> {
    let mut remove = RemoveEc2Node::builder(&providers.aws).min_nodes(config.watch.min_nodes);
    if let Some(draining) = config.watch.draining {
        remove = remove.draining(draining);
    }
    let cluster_update = ClusterUpdate {
        shell: providers.shell.clone(),
        script: config.asset("scripts/cluster-members.sh"),
        sudo: config.tomcat.sudo,
    };
    let email = Email::builder(providers.mailer.clone())
        .addresses_from(&config.smtp)
        .build()?;
    let mut builder = Pipeline::builder("tomcat-scale-in");
    if let Some(journal) = journal {
        builder = builder.journal(journal);
    }
    builder
        .step(remove.build()?.on(Target::None))
        .step(cluster_update.on(Target::Cluster))
        .finally(email.on(Target::None))
        .build()
}

fn deploy_app(config: &TomcatClusterConfig, shell: Arc<dyn RemoteShell>) -> Result<NodeTask> {
    let t = config.tomcat.clone();
    let war = Arc::new(build_war(&config.asset("webapp")).map_err(Error::InvalidConfig)?);
    let script_path = config.asset("scripts/deploy-war.sh");
    let script = Arc::new(std::fs::read(&script_path).map_err(|e| {
        Error::InvalidConfig(format!("cannot read {}: {e}", script_path.display()))
    })?);
    let undo_app = t.app.clone();
    let undo_sudo = t.sudo;
    let task = NodeTask::new("app-deploy", shell, move |s| {
        let (war, script, t) = (war.clone(), script.clone(), t.clone());
        async move {
            let war_path = format!("/tmp/pyscaler-{}.war", t.app);
            let script_path = "/tmp/pyscaler-deploy-war.sh";
            s.put(war.to_vec(), &war_path, 0o644).await?;
            s.put(script.to_vec(), script_path, 0o755).await?;
            let line = pyscaler_ssh::command_line(
                "sh",
                [
                    script_path,
                    "--port",
                    &t.http_port.to_string(),
                    "--timeout",
                    &t.ready_within.as_secs().to_string(),
                    &war_path,
                    &t.app,
                    &t.expected_text,
                ],
            )?;
            let out = if t.sudo {
                s.sudo(&line).await?
            } else {
                s.run(&line).await?
            };
            if !t.check_from_controller {
                return Ok(format!(
                    "{}; not checked from the controller (check_from_controller = false)",
                    out.stdout.trim()
                ));
            }
            // The node says it answers; check it from here too, as a client would.
            let host = s
                .node()
                .address
                .as_ref()
                .map(|a| a.host.clone())
                .unwrap_or_default();
            http::wait_until_ok(
                &host,
                t.http_port,
                &format!("/{}/", t.app),
                &t.expected_text,
                t.ready_within,
            )
            .await
            .map_err(|e| NodeFailure::from(Error::other(ErrorKind::RemoteCommandFailed, e)))?;
            // The script's own line names the node's loopback, where it
            // checked; this names the address a client uses.
            Ok(format!(
                "{}; checked from the controller at http://{}:{}/{}/",
                out.stdout.trim(),
                host,
                t.http_port,
                t.app
            ))
        }
    })
    .undo(move |s| {
        let app = undo_app.clone();
        async move {
            let line = format!(
                "rm -f /var/lib/tomcat10/webapps/{0}.war /tmp/pyscaler-{0}.war",
                app
            );
            let removed = if undo_sudo {
                s.sudo(&line).await
            } else {
                s.run(&line).await
            };
            match removed {
                Ok(_) => Ok(format!("removed {app}.war")),
                // A node that is gone (its run being undone after a crash)
                // has no application left to remove.
                Err(e) if e.is_unreachable() => Ok(format!("unreachable, nothing to remove: {e}")),
                Err(e) => Err(e.into()),
            }
        }
    });
    Ok(task)
}

/// Rewrites every node's list of cluster members (`name=host` per line)
/// from the cluster as the run sees it; undone by writing the list without
/// this run's new nodes.
struct ClusterUpdate {
    shell: Arc<dyn RemoteShell>,
    script: PathBuf,
    sudo: bool,
}

impl ClusterUpdate {
    fn script(&self, members: Vec<String>) -> Result<LocalScript> {
        LocalScript::builder(self.shell.clone())
            .name("cluster-update")
            .file(self.script.clone())
            .args(members)
            .sudo(self.sudo)
            .build()
    }
}

fn member(n: &pyscaler_core::Node) -> String {
    let host = n
        .address
        .as_ref()
        .map(|a| a.host.as_str())
        .unwrap_or("unknown");
    format!("{}={host}", n.name)
}

#[async_trait]
impl Action for ClusterUpdate {
    fn name(&self) -> &str {
        "cluster-update"
    }

    fn describe(&self) -> Effects {
        Effects::says("rewrite the cluster member list on every node")
    }

    async fn run(&self, ctx: &mut Context) -> Result<()> {
        let members = ctx.cluster().nodes().iter().map(member).collect();
        self.script(members)?.run(ctx).await
    }

    /// The member lists without this run's nodes, rewritten on the other
    /// nodes (the run's own are going away, and may already be gone when a
    /// dead controller's run is undone).
    async fn compensate(&self, ctx: &mut Context) -> Result<()> {
        let members = ctx
            .cluster()
            .nodes()
            .iter()
            .filter(|n| !ctx.is_new(&n.id))
            .map(member)
            .collect();
        let new: Vec<String> = ctx.new_nodes().iter().map(|n| n.id.clone()).collect();
        ctx.keep_targets(|n| !new.contains(&n.id));
        self.script(members)?.run(ctx).await
    }

    /// Yes: it rewrites the whole list from the cluster each time.
    fn repeatable(&self) -> bool {
        true
    }
}
