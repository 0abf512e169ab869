//! The orphan sweep against a real AWS API endpoint (`moto_server`, started by the
//! shared harness on a free loopback port) and the embedded file journal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use pyscaler_aws::{
    Aws, ClassicElb, ClientConfig, Ec2, Ec2Profile, InstanceState, LaunchSpec, LoadBalancer,
    OrphanReason, SdkEc2, StaticCredentials, SweepOrphans, SweepOutcome, TAG_CLUSTER, TAG_RUN,
};
use pyscaler_core::{FileJournal, Journal, JournalEntry, Node, RunId, RunStatus, TriggerInfo};
use pyscaler_testkit::moto::{MotoServer, ACCESS_KEY_ID, AMI, REGION, SECRET_ACCESS_KEY};
use pyscaler_testkit::service_dir;

const LB: &str = "web-lb";

async fn launch(ec2: &SdkEc2, tags: &[(&str, &str)]) -> String {
    let spec = LaunchSpec {
        launch_template: None,
        image_id: Some(AMI.into()),
        instance_type: Some("t3.small".into()),
        key_name: None,
        security_group_ids: Vec::new(),
        subnet_id: None,
        user_data: None,
        iam_instance_profile: None,
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        min_count: 1,
        max_count: 1,
        client_token: format!("sweep-test-{}", RunId::generate()),
        market: Default::default(),
    };
    ec2.launch(&spec).await.expect("launch")[0].id.clone()
}

async fn start_run(journal: &FileJournal, id: &str, finished: Option<RunStatus>) {
    let run_id = RunId::new(id);
    journal
        .append(JournalEntry::RunStarted {
            run_id: run_id.clone(),
            pipeline: "scale-out".into(),
            cluster: "web".into(),
            trigger: TriggerInfo::new("manual", "sweep test"),
            at: Utc::now(),
        })
        .await
        .expect("journal");
    if let Some(status) = finished {
        journal
            .append(JournalEntry::RunFinished {
                run_id,
                status,
                new_nodes: Vec::<Node>::new(),
                at: Utc::now(),
            })
            .await
            .expect("journal");
    }
}

#[tokio::test]
async fn the_sweep_terminates_old_instances_of_unsuccessful_runs_and_nothing_else() {
    let moto = MotoServer::start();
    let config = ClientConfig::new(REGION)
        .endpoint_url(moto.endpoint_url())
        .credentials(StaticCredentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
        .max_attempts(1);
    let ec2 = Arc::new(SdkEc2::connect(&config).await);
    let elb = Arc::new(ClassicElb::connect(&config).await);
    let profile = Ec2Profile::builder(REGION, AMI, "t3.small")
        .load_balancer(LB)
        .build()
        .expect("profile");
    let aws = Aws::new(ec2.clone(), Some(elb.clone()), profile).expect("paired providers");
    moto.create_load_balancer(LB).await;

    let journal = Arc::new(
        FileJournal::open(service_dir("sweep-journal", moto.port()), "web").expect("journal"),
    );
    start_run(&journal, "run-ok", Some(RunStatus::Succeeded)).await;
    start_run(&journal, "run-failed", Some(RunStatus::Failed)).await;
    start_run(&journal, "run-dead", None).await;

    let kept = launch(&ec2, &[(TAG_CLUSTER, "web"), (TAG_RUN, "run-ok")]).await;
    let failed = launch(&ec2, &[(TAG_CLUSTER, "web"), (TAG_RUN, "run-failed")]).await;
    let dead = launch(&ec2, &[(TAG_CLUSTER, "web"), (TAG_RUN, "run-dead")]).await;
    let unknown = launch(&ec2, &[(TAG_CLUSTER, "web"), (TAG_RUN, "run-elsewhere")]).await;
    let hand_made = launch(&ec2, &[(TAG_CLUSTER, "web")]).await;
    let other_cluster = launch(&ec2, &[(TAG_CLUSTER, "db"), (TAG_RUN, "run-dead")]).await;
    let untagged = launch(&ec2, &[("Name", "bastion")]).await;
    let all = [
        &kept,
        &failed,
        &dead,
        &unknown,
        &hand_made,
        &other_cluster,
        &untagged,
    ];
    let all: Vec<String> = all.into_iter().cloned().collect();
    elb.register(LB, &all).await.expect("register");

    // Within the grace period, every orphan is reported and none is touched.
    let orphans = SweepOrphans::builder(&aws, journal.clone(), "web")
        .grace(Duration::from_secs(3600))
        .build()
        .expect("sweep")
        .sweep()
        .await
        .expect("swept");
    assert_eq!(orphans.len(), 4, "{orphans:?}");
    assert!(orphans
        .iter()
        .all(|o| o.outcome != SweepOutcome::Terminated));
    let live = |ids: Vec<pyscaler_aws::Instance>| -> Vec<String> {
        let mut ids: Vec<String> = ids
            .into_iter()
            .filter(|i| !i.state.is_gone())
            .map(|i| i.id)
            .collect();
        ids.sort();
        ids
    };
    let mut everyone = all.clone();
    everyone.sort();
    assert_eq!(live(ec2.describe(&all).await.expect("describe")), everyone);

    // moto stamps launch times to the second: let the instances age past a zero grace.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let orphans = SweepOrphans::builder(&aws, journal.clone(), "web")
        .grace(Duration::ZERO)
        .build()
        .expect("sweep")
        .sweep()
        .await
        .expect("swept");
    let mut seen: Vec<(String, Option<String>, OrphanReason, SweepOutcome)> = orphans
        .iter()
        .map(|o| {
            (
                o.instance_id.clone(),
                o.run_id.as_ref().map(RunId::to_string),
                o.reason,
                o.outcome,
            )
        })
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![
        (
            failed.clone(),
            Some("run-failed".to_owned()),
            OrphanReason::NotSucceeded(RunStatus::Failed),
            SweepOutcome::Terminated,
        ),
        (
            dead.clone(),
            Some("run-dead".to_owned()),
            OrphanReason::Unfinished,
            SweepOutcome::Terminated,
        ),
        (
            unknown.clone(),
            Some("run-elsewhere".to_owned()),
            OrphanReason::UnknownRun,
            SweepOutcome::Terminated,
        ),
        (
            hand_made.clone(),
            None,
            OrphanReason::NoRunTag,
            SweepOutcome::Skipped,
        ),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(seen, expected);

    // Checked through the APIs: the swept instances are terminated and out of the load balancer.
    let mut survivors = vec![
        kept.clone(),
        hand_made.clone(),
        other_cluster.clone(),
        untagged.clone(),
    ];
    survivors.sort();
    assert_eq!(live(ec2.describe(&all).await.expect("describe")), survivors);
    for id in [&failed, &dead, &unknown] {
        let state = ec2
            .describe(std::slice::from_ref(id))
            .await
            .expect("describe")[0]
            .state;
        assert_eq!(state, InstanceState::Terminated, "{id}");
    }
    let mut registered: Vec<String> = elb
        .health(LB, &[])
        .await
        .expect("health")
        .into_iter()
        .map(|h| h.instance_id)
        .collect();
    registered.sort();
    assert_eq!(registered, survivors);
}
