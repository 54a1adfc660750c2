//! Run with: cargo run --example scale_out
//!
//! Needs an MQTT broker: by default `mqtt://127.0.0.1:1883` (e.g. `mosquitto -p 1883 -d`),
//! or the one in `MQTT_URL`. It must not drop what it queues for a disconnected session
//! (mosquitto: `max_queued_messages` above what a replica may miss, or 0; this example
//! keeps each session's backlog under mosquitto's default of 1000).
//!
//! Scale-out the way a StatefulSet runs it: several **processes** (this program started
//! again as replicas), each with a stable client id from its ordinal (`<name>-0`,
//! `<name>-1`, …), in one shared group, with persistent sessions. The program plays the
//! operator:
//!
//! 1. starts three replicas, which read their configuration from the environment
//!    (`MQTT_URL` through `Config::from_env`, the ordinal from `SCALE_OUT_REPLICA`);
//! 2. publishes 3,000 jobs with unique ids through a confirmed `Publisher`; while the
//!    first half streams in it **kills replica 1 (SIGKILL)** and, once the half is
//!    published, starts it again: it resumes its session and gets back what it had not
//!    acknowledged, plus its share of what was published while it was down;
//! 3. **scales down to two**: replica 2 gets SIGTERM (it drains and disconnects), the
//!    second half is published (the broker keeps queueing replica 2's share in its
//!    session), and replica 0 is restarted with the new count, so it **drains replica
//!    2's session** (`ConsumerBuilder::drain_sessions`) and ends it;
//! 4. waits until every job was processed, stops the replicas with SIGTERM, and prints
//!    what each replica did, the duplicates (at least once: a job processed just before
//!    the SIGKILL, whose acknowledgement never left, comes back) and what was lost
//!    (nothing).
//!
//! Each replica appends the id of every job it processed to its own file before
//! returning `Ok` (its "database"); the operator counts from those files.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tower::service_fn;
use tower_mqtt::{BoxError, Config, Consumer, Event, Message, ProtoVer, Publish, Publisher, QoS};

/// Jobs published in all.
pub(crate) const JOBS: usize = 3_000;
/// Replicas at the start; after the scale-down, one fewer.
const REPLICAS: usize = 3;
/// The line a replica writes to its file each time it has subscribed.
const UP: &str = "# subscribed";
/// The line replica 0 writes once it has drained a retired replica's session.
const DRAINED: &str = "# drained";

/// How to start this program again as a replica (the environment is added to it).
pub(crate) type Launcher = Arc<dyn Fn() -> Command + Send + Sync>;

/// What a run did.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(crate) published: usize,
    pub(crate) processed_unique: usize,
    pub(crate) duplicates: usize,
    pub(crate) lost: usize,
    /// Jobs processed by each replica (with repeats).
    pub(crate) per_replica: BTreeMap<usize, usize>,
    pub(crate) elapsed: Duration,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt().with_env_filter("error").init();
    if std::env::var_os("SCALE_OUT_REPLICA").is_some() {
        return replica().await;
    }
    let url = std::env::var("MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let exe = std::env::current_exe()?;
    let launch: Launcher = Arc::new(move || Command::new(&exe));
    let summary = operate(&url, &format!("scale-out-{}", std::process::id()), launch).await?;
    println!(
        "published {}, processed {} (each at least once), {} processed again, {} lost, in {:.1} s",
        summary.published,
        summary.processed_unique,
        summary.duplicates,
        summary.lost,
        summary.elapsed.as_secs_f64()
    );
    for (replica, jobs) in &summary.per_replica {
        println!("  replica {replica}: {jobs} jobs");
    }
    if summary.lost > 0 {
        return Err(format!("{} jobs were lost", summary.lost).into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// A replica: everything it needs comes from the environment.

/// Runs one replica until SIGTERM (it then drains and disconnects) or SIGKILL.
pub(crate) async fn replica() -> Result<(), BoxError> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let name = var("SCALE_OUT_NAME")?;
    let ordinal: usize = var("SCALE_OUT_REPLICA")?.parse()?;
    let replicas: usize = var("SCALE_OUT_REPLICAS")?.parse()?;
    let most_ever: usize = var("SCALE_OUT_MAX_REPLICAS")?.parse()?;
    let topic = var("SCALE_OUT_TOPIC")?;
    let log = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(var("SCALE_OUT_LOG")?)?,
    ));

    // A stable id per replica: the same ordinal resumes the same session.
    let config = Config::from_env()?
        .client_id(format!("{name}-{ordinal}"))
        .proto_ver(ProtoVer::V5);
    let own = format!("{name}-{ordinal}_0");
    let mut consumer = Consumer::builder(config)
        .topic(topic, QoS::AtLeastOnce)
        .shared_group(name.clone())
        .max_inflight(50)
        .on_event({
            let log = log.clone();
            move |e| match e {
                Event::SubscriptionSuccess { .. } => {
                    let _ = writeln!(log.lock().unwrap(), "{UP}");
                }
                // A drained session's slot stopped: `run` now ends that session before
                // it returns, even on SIGTERM.
                Event::ProducerTerminate { client_id, .. } if *client_id != own => {
                    let _ = writeln!(log.lock().unwrap(), "{DRAINED} {client_id}");
                }
                _ => {}
            }
        });
    if ordinal == 0 {
        // Replica 0 always runs: it drains the sessions of the replicas scaled away.
        consumer = consumer.drain_sessions((replicas..most_ever).map(|r| format!("{name}-{r}_0")));
    }
    let service = service_fn(move |m: Message| {
        // "Store" the job: its id goes to this replica's file before the Ok.
        let written = writeln!(
            log.lock().unwrap(),
            "{}",
            String::from_utf8_lossy(m.payload())
        );
        async move { written.map_err(BoxError::from) }
    });
    consumer
        .build()?
        .run(service, tower_mqtt::signal::shutdown_on_signals())
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// The operator: starts, kills, restarts and scales the replicas.

/// One replica process, killed when dropped.
struct Replica {
    child: Child,
}

impl Replica {
    /// SIGTERM, then wait for it to drain and exit.
    async fn terminate(mut self) -> Result<(), BoxError> {
        let pid = self.child.id().ok_or("the replica has already exited")?;
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        let status = tokio::time::timeout(Duration::from_secs(40), self.child.wait()).await??;
        if !status.success() {
            return Err(format!("a replica exited with {status} after SIGTERM").into());
        }
        Ok(())
    }

    /// SIGKILL: no draining, no DISCONNECT.
    async fn kill(mut self) -> Result<(), BoxError> {
        self.child.kill().await?;
        Ok(())
    }
}

/// Everything a run needs to start replicas.
struct Operator {
    url: String,
    name: String,
    topic: String,
    dir: tempfile::TempDir,
    launch: Launcher,
}

impl Operator {
    fn log(&self, ordinal: usize) -> PathBuf {
        self.dir.path().join(format!("replica-{ordinal}.log"))
    }

    /// Start replica `ordinal` of `replicas` and wait until it has subscribed.
    async fn start(&self, ordinal: usize, replicas: usize) -> Result<Replica, BoxError> {
        let log = self.log(ordinal);
        let before = lines(&log, |l| l == UP);
        let mut command = (self.launch)();
        command
            .env("MQTT_URL", &self.url)
            .env("SCALE_OUT_NAME", &self.name)
            .env("SCALE_OUT_REPLICA", ordinal.to_string())
            .env("SCALE_OUT_REPLICAS", replicas.to_string())
            .env("SCALE_OUT_MAX_REPLICAS", REPLICAS.to_string())
            .env("SCALE_OUT_TOPIC", &self.topic)
            .env("SCALE_OUT_LOG", &log)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn()?;
        wait_until(Duration::from_secs(30), || {
            lines(&log, |l| l == UP) > before
        })
        .await
        .map_err(|_| format!("replica {ordinal} did not subscribe within 30 s"))?;
        Ok(Replica { child })
    }

    /// Job id → how often it was processed, and jobs per replica.
    fn processed(&self) -> (HashMap<String, usize>, BTreeMap<usize, usize>) {
        let (mut jobs, mut per_replica) = (HashMap::new(), BTreeMap::new());
        for ordinal in 0..REPLICAS {
            let text = std::fs::read_to_string(self.log(ordinal)).unwrap_or_default();
            for id in text.lines().filter(|l| l.starts_with("job-")) {
                *jobs.entry(id.to_owned()).or_insert(0) += 1;
                *per_replica.entry(ordinal).or_insert(0) += 1;
            }
        }
        (jobs, per_replica)
    }
}

/// How many lines of the file at `path` satisfy `keep` (0 when it does not exist yet).
fn lines(path: &Path, keep: impl Fn(&str) -> bool) -> usize {
    std::fs::read_to_string(path)
        .map(|text| text.lines().filter(|l| keep(l)).count())
        .unwrap_or(0)
}

/// Check `done` every 20 ms until it holds or `limit` has passed.
async fn wait_until(limit: Duration, done: impl Fn() -> bool) -> Result<(), BoxError> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return Err("timed out".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Publish jobs `range` (payload `job-<i>`), each confirmed by the broker.
async fn publish(
    publisher: &Publisher,
    topic: &str,
    range: std::ops::Range<usize>,
) -> Result<(), BoxError> {
    for i in range {
        publisher
            .publish(Publish::new(topic, format!("job-{i}")).qos(QoS::AtLeastOnce))
            .await?;
    }
    Ok(())
}

/// The whole scenario against the broker at `url`; `name` names the group and the
/// replicas' client ids.
pub(crate) async fn operate(url: &str, name: &str, launch: Launcher) -> Result<Summary, BoxError> {
    let op = Operator {
        url: url.to_owned(),
        name: name.to_owned(),
        topic: format!("{name}/jobs"),
        dir: tempfile::tempdir()?,
        launch,
    };
    let started = Instant::now();
    let mut replicas = Vec::new();
    for ordinal in 0..REPLICAS {
        replicas.push(Some(op.start(ordinal, REPLICAS).await?));
    }
    let publisher = Publisher::builder(
        Config::from_url(url)?
            .client_id(format!("{name}-publisher"))
            .proto_ver(ProtoVer::V5),
    )
    .build()?;

    // Kill replica 1 while the first half streams in, once it has done some of it, and
    // start it again.
    let half = JOBS / 2;
    let first_half = tokio::spawn({
        let (publisher, topic) = (publisher.clone(), op.topic.clone());
        async move { publish(&publisher, &topic, 0..half).await }
    });
    let replica_1 = op.log(1);
    wait_until(Duration::from_secs(30), || {
        lines(&replica_1, |l| l.starts_with("job-")) >= JOBS / 20
    })
    .await
    .map_err(|_| "replica 1 processed nothing within 30 s")?;
    replicas[1].take().ok_or("replica 1 runs")?.kill().await?;
    first_half.await??;
    replicas[1] = Some(op.start(1, REPLICAS).await?);

    // Scale down to two: replica 2 leaves; replica 0 restarts knowing the new count and
    // drains what replica 2's session holds, including its share of the second half.
    replicas[2]
        .take()
        .ok_or("replica 2 runs")?
        .terminate()
        .await?;
    publish(&publisher, &op.topic, half..JOBS).await?;
    replicas[0]
        .take()
        .ok_or("replica 0 runs")?
        .terminate()
        .await?;
    replicas[0] = Some(op.start(0, REPLICAS - 1).await?);

    let all_done = wait_until(Duration::from_secs(60), || op.processed().0.len() >= JOBS).await;
    // Replica 2's session is drained once nothing has come from it for a second.
    let retired = format!("{DRAINED} {name}-{}_0", REPLICAS - 1);
    let drained = wait_until(Duration::from_secs(30), || {
        lines(&op.log(0), |l| l == retired) > 0
    })
    .await;
    for replica in replicas.into_iter().flatten() {
        replica.terminate().await?;
    }
    let (jobs, per_replica) = op.processed();
    if all_done.is_err() {
        tracing::error!(
            processed = jobs.len(),
            "not every job was processed within 60 s"
        );
    }
    if drained.is_err() {
        tracing::error!("replica 0 did not finish draining replica 2's session within 30 s");
    }
    Ok(Summary {
        published: JOBS,
        processed_unique: jobs.len(),
        duplicates: jobs.values().map(|n| n - 1).sum(),
        lost: JOBS - jobs.len().min(JOBS),
        per_replica,
        elapsed: started.elapsed(),
    })
}
