//! `examples/batch_to_postgres.rs` end to end: its pipeline against a private
//! mosquitto and the PostgreSQL in `DATABASE_URL` (default
//! `host=127.0.0.1 user=postgres dbname=test`). Without a reachable PostgreSQL the test
//! fails, saying what to start.

mod support;

// The example's `main` is not used here.
#[allow(dead_code)]
#[path = "../examples/batch_to_postgres.rs"]
mod example;

use std::time::Duration;

use support::consumer::{config, left_in_session};
use support::{unique, with_timeout, Broker, BrokerOptions};
use tower_mqtt::ProtoVer;

/// Every valid reading becomes one row, in its sensor's order (batches per sensor,
/// written one at a time per sensor), every invalid one is dead-lettered, every message
/// is acknowledged, and the session holds nothing afterwards.
#[tokio::test]
async fn valid_readings_become_rows_in_sensor_order_and_the_session_holds_nothing() {
    with_timeout(Duration::from_secs(120), async {
        let database = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".into());
        let client = example::connect(&database)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let broker = Broker::start(BrokerOptions::default());
        let id = unique("b2pg");
        let table = format!("readings_{}", id.replace('-', "_"));
        let prefix = unique("p");
        let readings = 2_000;
        let run = example::Run {
            config: config(&broker, &id).proto_ver(ProtoVer::V5),
            database,
            table: table.clone(),
            prefix: prefix.clone(),
            readings,
        };
        let summary = example::ingest(run).await.expect("the pipeline runs");
        let rows: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        client
            .batch_execute(&format!("DROP TABLE {table}"))
            .await
            .unwrap();

        let valid = example::valid(readings);
        assert!(valid < readings, "the demo data has invalid readings");
        assert_eq!(rows, valid as i64, "{summary:?}");
        assert_eq!(summary.rows, rows);
        assert_eq!(summary.out_of_order, 0, "{summary:?}");
        assert_eq!(summary.acknowledged, readings, "{summary:?}");
        let marker_topic = format!("{prefix}/readings/marker");
        let left = left_in_session(&broker, &id, &marker_topic, 1).await;
        assert!(left.is_empty(), "left in the session: {left:?}");
    })
    .await;
}
