//! `examples/scale_out.rs` end to end against a private mosquitto: three replica
//! processes (this test binary started again, see [`scale_out_replica_child`]) in one
//! shared group with stable per-replica ids; one is killed and restarted, one is scaled
//! away and its session drained by replica 0.

mod support;

// The example's `main` is not used here.
#[allow(dead_code)]
#[path = "../examples/scale_out.rs"]
mod example;

use std::sync::Arc;
use std::time::Duration;

use support::{unique, with_timeout, Broker, BrokerOptions, TestClient};

/// A replica: runs only when the parent test starts this binary with the example's
/// environment (`SCALE_OUT_REPLICA`, …); until SIGTERM (then drains) or SIGKILL.
#[tokio::test]
#[ignore = "a replica of the scale-out test; started by it"]
async fn scale_out_replica_child() {
    if std::env::var_os("SCALE_OUT_REPLICA").is_none() {
        return;
    }
    example::replica().await.expect("the replica runs");
}

/// Every job is processed at least once across a SIGKILL and restart of replica 1 and
/// the scale-down from three replicas to two; every replica did some of the work, and
/// the retired replica's session is ended.
#[tokio::test]
async fn replicas_lose_nothing_through_a_kill_and_a_scale_down() {
    with_timeout(Duration::from_secs(240), async {
        let broker = Broker::start(BrokerOptions::default());
        let name = unique("scale-out");
        let exe = std::env::current_exe().unwrap();
        let launch: example::Launcher = Arc::new(move || {
            let mut command = tokio::process::Command::new(&exe);
            command.args([
                "--ignored",
                "--exact",
                "scale_out_replica_child",
                "--nocapture",
            ]);
            command
        });
        let url = format!("mqtt://127.0.0.1:{}", broker.port());
        let summary = example::operate(&url, &name, launch)
            .await
            .expect("the scenario runs");

        assert_eq!(summary.lost, 0, "{summary:?}");
        assert_eq!(summary.processed_unique, example::JOBS, "{summary:?}");
        for replica in 0..3 {
            assert!(
                summary.per_replica.get(&replica).copied().unwrap_or(0) > 0,
                "replica {replica} processed nothing: {summary:?}"
            );
        }
        let probe = TestClient::connect(&broker, &format!("{name}-2_0"), false, false).await;
        assert!(
            !probe.session_present(),
            "the retired replica's session is ended"
        );
        probe.disconnect(Duration::from_secs(10)).await;
    })
    .await;
}
