//! `signal::shutdown_on_signals` cancels its token on SIGTERM. In its own test binary,
//! because the signal goes to the whole process.

#![cfg(unix)]

use std::time::Duration;

#[tokio::test]
async fn sigterm_cancels_the_token() {
    let token = tower_mqtt::signal::shutdown_on_signals();
    assert!(!token.is_cancelled());
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(std::process::id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill failed: {status}");
    tokio::time::timeout(Duration::from_secs(10), token.cancelled())
        .await
        .expect("the token was not cancelled within 10 s of SIGTERM");
}
