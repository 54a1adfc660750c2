//! Run with: cargo run --example batch_to_postgres
//!
//! Needs an MQTT broker, by default `mqtt://127.0.0.1:1883` (e.g. `mosquitto -p 1883 -d`)
//! or the one in `MQTT_URL`, and PostgreSQL, by default
//! `host=127.0.0.1 user=postgres dbname=test` or the one in `DATABASE_URL` (a
//! tokio-postgres connection string). To start a PostgreSQL that fits the default:
//!
//! ```text
//! docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test postgres:16
//! # or, on Debian/Ubuntu: apt-get install -y postgresql && service postgresql start,
//! # then: DATABASE_URL="host=/var/run/postgresql user=postgres dbname=postgres"
//! ```
//!
//! JSON readings go into a PostgreSQL table, one transaction per batch, partitioned by
//! device:
//!
//! ```text
//! dead_letter → decode_json::<Reading>() → batch(per sensor, 200 / 100 ms, 4 in flight)
//!             → partition(per sensor) → INSERT … UNNEST
//! ```
//!
//! Each batch holds one sensor's readings, and batches of one sensor are written one
//! after the other, in the order they were filled, while different sensors' batches
//! are written at once: every sensor's rows are stored in the order it published them.
//!
//! The example publishes its own readings through the consumer's confirmed `Publisher`:
//! one in fifty is not JSON (rejected by `decode_json`, then dead-lettered), one in a
//! hundred reads below absolute zero (failed on its own by the batch service with a
//! `Permanent` error, then dead-lettered), the rest become rows. It stops once every
//! reading is acknowledged and prints a summary line. The table (`readings_<pid>`) is
//! kept so that you can look at it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Notify};
use tokio_postgres::{Client, NoTls};
use tower::ServiceBuilder;
use tower_mqtt::{
    BoxError, CancellationToken, Config, Consumer, Event, Permanent, ProtoVer, Publish, QoS,
};
use tower_mqtt_layers::batch::{Batch, BatchLayer, BatchResponse};
use tower_mqtt_layers::decode::Decoded;
use tower_mqtt_layers::partition::PartitionLayer;
use tower_mqtt_layers::ServiceBuilderExt;

/// Batches in the database at once (and PostgreSQL connections).
const IN_FLIGHT: usize = 4;

#[derive(Debug, serde::Deserialize)]
struct Reading {
    sensor: String,
    /// The sensor's own reading number: it counts up, so rows out of order show.
    seq: i64,
    celsius: f64,
}

/// One run of the pipeline.
pub(crate) struct Run {
    /// The consumer's connection (its client id names the session).
    pub(crate) config: Config,
    /// tokio-postgres connection string.
    pub(crate) database: String,
    /// Table to create and fill.
    pub(crate) table: String,
    /// Readings are published to `<prefix>/readings/<sensor>`, dead letters go to
    /// `<prefix>/dead/<sensor>`.
    pub(crate) prefix: String,
    /// How many readings to publish.
    pub(crate) readings: usize,
}

/// What a run did.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(crate) acknowledged: usize,
    pub(crate) rows: i64,
    pub(crate) batches: usize,
    /// Rows stored after a later reading of the same sensor (0: each sensor in order).
    pub(crate) out_of_order: i64,
    pub(crate) elapsed: Duration,
}

/// Reading `i` of the demo data, and whether it becomes a row.
/// Sensor `i % 10` publishes it as its reading number `i / 10`.
fn payload(i: usize) -> (String, bool) {
    let (sensor, seq) = (i % 10, i / 10);
    if i % 50 == 7 {
        (format!("sensor-{sensor} reads 21.5 °C"), false)
    } else if i % 100 == 33 {
        (
            format!(r#"{{"sensor":"sensor-{sensor}","seq":{seq},"celsius":-300}}"#),
            false,
        )
    } else {
        let celsius = 15.0 + (i % 100) as f64 / 10.0;
        (
            format!(r#"{{"sensor":"sensor-{sensor}","seq":{seq},"celsius":{celsius}}}"#),
            true,
        )
    }
}

/// How many of `readings` demo readings become rows.
pub(crate) fn valid(readings: usize) -> usize {
    (0..readings).filter(|&i| payload(i).1).count()
}

/// A PostgreSQL connection, or an error that says what to start.
pub(crate) async fn connect(database: &str) -> Result<Client, BoxError> {
    let (client, connection) = tokio_postgres::connect(database, NoTls)
        .await
        .map_err(|e| {
            format!(
                "PostgreSQL is not reachable at {database:?} ({e}): start one, e.g. `docker run -d \
                 -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test postgres:16`, \
                 or set DATABASE_URL"
            )
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("PostgreSQL connection closed: {e}");
        }
    });
    Ok(client)
}

/// Create the table, publish the readings, consume them into the table until every
/// one is acknowledged.
pub(crate) async fn ingest(run: Run) -> Result<Summary, BoxError> {
    let Run {
        config,
        database,
        table,
        prefix,
        readings,
    } = run;
    // PostgreSQL connections, one per batch in flight.
    let mut clients = Vec::new();
    for _ in 0..IN_FLIGHT {
        clients.push(Mutex::new(connect(&database).await?));
    }
    clients[0]
        .lock()
        .await
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigserial PRIMARY KEY, topic text NOT NULL, \
             sensor text NOT NULL, seq int8 NOT NULL, celsius float8 NOT NULL)"
        ))
        .await?;
    let insert = format!(
        "INSERT INTO {table} (topic, sensor, seq, celsius) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::float8[])"
    );

    // Count acknowledgements (stored rows and dead letters alike) to know when to stop.
    let (subscribed, done) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let (s, d, a) = (subscribed.clone(), done.clone(), acknowledged.clone());
    let consumer = Consumer::builder(config)
        .topic(format!("{prefix}/readings/+"), QoS::AtLeastOnce)
        .max_inflight(500)
        .on_event(move |e| match e {
            Event::SubscriptionSuccess { .. } => s.notify_one(),
            Event::MessageAck { disposition, .. } if disposition.acknowledges() => {
                let seen = a.fetch_add(1, Ordering::Relaxed) + 1;
                if seen == readings {
                    d.notify_one();
                }
            }
            _ => {}
        })
        .build()?;
    let publisher = consumer.publisher()?;

    // One open batch per sensor; up to IN_FLIGHT batches in the database at once.
    let batches = BatchLayer::builder()
        .batch_key(|r: &Decoded<Reading>| r.value.sensor.clone())
        .max_size(200)
        .max_wait(Duration::from_millis(100))
        .concurrency(IN_FLIGHT)
        .build()?;
    // A sensor's batches are written one at a time, in the order they were filled.
    let per_sensor =
        PartitionLayer::for_requests(|b: &Batch<Decoded<Reading>, String>| b.key().clone());
    let (pool, next, calls) = (
        Arc::new(clients),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (insert, counted) = (Arc::new(insert), calls.clone());
    let dead = format!("{prefix}/dead");
    let service = ServiceBuilder::new()
        .dead_letter(publisher.clone(), move |m| {
            let sensor = m.topic().rsplit('/').next().unwrap_or("unknown");
            format!("{dead}/{sensor}")
        })
        .decode_json::<Reading>()
        .batch(batches)
        .layer(per_sensor)
        .service_fn(move |batch: Batch<Decoded<Reading>, String>| {
            let (pool, next, insert, counted) =
                (pool.clone(), next.clone(), insert.clone(), counted.clone());
            async move {
                let mut response = BatchResponse::new();
                let (mut topics, mut sensors, mut seqs, mut celsius) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for (i, Decoded { message, value }) in batch.iter().enumerate() {
                    if value.celsius < -273.15 {
                        let e = format!("{} °C is below absolute zero", value.celsius);
                        response = response.fail(i, Permanent::new(e));
                        continue;
                    }
                    topics.push(message.topic().to_owned());
                    sensors.push(value.sensor.clone());
                    seqs.push(value.seq);
                    celsius.push(value.celsius);
                }
                let mut client = pool[next.fetch_add(1, Ordering::Relaxed) % pool.len()]
                    .lock()
                    .await;
                let transaction = client.transaction().await?;
                transaction
                    .execute(insert.as_str(), &[&topics, &sensors, &seqs, &celsius])
                    .await?;
                transaction.commit().await?;
                counted.fetch_add(1, Ordering::Relaxed);
                Ok::<_, BoxError>(response)
            }
        });
    let stop = CancellationToken::new();
    let consuming = tokio::spawn(consumer.run(service, stop.clone()));

    subscribed.notified().await;
    let start = Instant::now();
    for i in 0..readings {
        let topic = format!("{prefix}/readings/sensor-{}", i % 10);
        publisher.publish(Publish::new(topic, payload(i).0)).await?;
    }
    tokio::time::timeout(Duration::from_secs(60), done.notified())
        .await
        .map_err(|_| "not every reading was acknowledged within 60 s")?;
    let elapsed = start.elapsed();
    stop.cancel();
    consuming.await??;

    let client = connect(&database).await?;
    let rows: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?
        .get(0);
    let out_of_order: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM (SELECT seq < lag(seq) OVER (PARTITION BY sensor \
                 ORDER BY id) AS behind FROM {table}) AS r WHERE behind"
            ),
            &[],
        )
        .await?
        .get(0);
    Ok(Summary {
        acknowledged: acknowledged.load(Ordering::Relaxed),
        rows,
        batches: calls.load(Ordering::Relaxed),
        out_of_order,
        elapsed,
    })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt().with_env_filter("error").init();
    let url = std::env::var("MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let database = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".into());
    let pid = std::process::id();
    let run = Run {
        config: Config::from_url(&url)?
            .client_id(format!("batch-to-postgres-{pid}"))
            .proto_ver(ProtoVer::V5),
        database,
        table: format!("readings_{pid}"),
        prefix: format!("example/{pid}"),
        readings: 10_000,
    };
    let (table, readings) = (run.table.clone(), run.readings);
    let summary = ingest(run).await?;
    if summary.rows != valid(readings) as i64 {
        return Err(format!("expected {} rows: {summary:?}", valid(readings)).into());
    }
    println!(
        "{readings} readings, {} acknowledged: {} rows in {table} in {} batches (one \
         transaction each), {} dead-lettered, {} rows out of their sensor's order, \
         {:.0} msg/s",
        summary.acknowledged,
        summary.rows,
        summary.batches,
        summary.acknowledged as i64 - summary.rows,
        summary.out_of_order,
        summary.acknowledged as f64 / summary.elapsed.as_secs_f64(),
    );
    Ok(())
}
