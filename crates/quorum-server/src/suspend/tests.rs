//! The suspension's state machine, driven by requests as
//! `VolumeEntry::io` drives it, on tokio's paused clock.

use quorum_core::{Op, RecordingSink};

use super::*;

fn outage(offset: u64) -> QuorumError {
    QuorumError {
        op: Op::Write,
        offset,
        bytes: 4096,
        succeeded: 1,
        threshold: 2,
        failures: Vec::new(),
        no_majority: None,
    }
}

fn suspension(timeout: Duration) -> (Arc<Suspension>, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let s = Suspension::new("vm", ErrorPolicy::Suspend, timeout, sink.clone());
    (Arc::new(s), sink)
}

/// A request as `VolumeEntry::io` runs it, whose engine answers with
/// the next of `answers` (true: success) each time it runs; says each
/// run on `log` and returns whether it succeeded in the end.
async fn request(
    s: Arc<Suspension>,
    id: u32,
    answers: Vec<bool>,
    log: Arc<Mutex<Vec<u32>>>,
) -> Result<(), String> {
    let mut turn = match s.admit().await {
        None => None,
        Some(Released::Retry(t)) => Some(t),
        Some(Released::Failed(e)) => return Err(e.to_string()),
    };
    for ok in answers {
        log.lock().expect("log").push(id);
        if ok {
            return Ok(());
        }
        match s.hold(turn.take(), &outage(u64::from(id))).await {
            Released::Retry(t) => turn = Some(t),
            Released::Failed(_) => return Err(format!("request {id} failed")),
        }
    }
    Err("out of answers".into())
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn held_requests_are_retried_in_order_after_a_resume() {
    let (s, sink) = suspension(Duration::from_secs(300));
    let log = Arc::new(Mutex::new(Vec::new()));
    assert_eq!(s.state(), VolumeState::Running);
    assert!(s.resume().is_err(), "a running volume does not resume");
    // 1 fails and suspends; 2 arrives and is held; 1 fails again on
    // its first retry and suspends again, still first in line.
    let one = tokio::spawn(request(s.clone(), 1, vec![false, false, true], log.clone()));
    settle().await;
    assert_eq!(s.state(), VolumeState::Suspended);
    let two = tokio::spawn(request(s.clone(), 2, vec![true], log.clone()));
    settle().await;
    assert_eq!(s.suspended().map(|x| x.held), Some(2));
    assert_eq!(s.resume().expect("suspended"), 2);
    settle().await;
    assert_eq!(s.state(), VolumeState::Suspended, "the retry failed again");
    assert_eq!(*log.lock().expect("log"), [1, 1]);
    assert_eq!(s.resume().expect("suspended again"), 2);
    one.await.expect("join").expect("1 succeeds");
    two.await.expect("join").expect("2 succeeds");
    assert_eq!(*log.lock().expect("log"), [1, 1, 1, 2]);
    settle().await;
    assert_eq!(s.state(), VolumeState::Running);
    let names: Vec<&str> = sink.events().iter().map(|(_, e)| e.name()).collect();
    assert_eq!(
        names,
        [
            "VOLUME_SUSPENDED",
            "VOLUME_RESUMED",
            "VOLUME_SUSPENDED",
            "VOLUME_RESUMED"
        ]
    );
    // A later request runs at once.
    request(s.clone(), 3, vec![true], log.clone())
        .await
        .expect("3 runs");
}

#[tokio::test(start_paused = true)]
async fn the_timeout_fails_every_held_request_with_its_cause() {
    let (s, sink) = suspension(Duration::from_secs(5));
    let log = Arc::new(Mutex::new(Vec::new()));
    let one = tokio::spawn(request(s.clone(), 1, vec![false, true], log.clone()));
    settle().await;
    let two = tokio::spawn(request(s.clone(), 2, vec![true], log.clone()));
    let started = tokio::time::Instant::now();
    let e1 = one.await.expect("join").expect_err("1 fails");
    let e2 = two.await.expect("join").expect_err("2 fails");
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(e1, "request 1 failed");
    assert!(e2.contains("suspend_timeout (5s)"), "{e2}");
    assert!(e2.contains("write of 4096 bytes at 1 failed"), "{e2}");
    assert_eq!(*log.lock().expect("log"), [1], "2 never ran");
    assert_eq!(s.state(), VolumeState::Running);
    let events = sink.events();
    assert!(matches!(
        events.last(),
        Some((
            _,
            Event::VolumeResumed {
                by: ResumedBy::Timeout,
                held: 2
            }
        ))
    ));
}

#[tokio::test(start_paused = true)]
async fn report_never_holds_and_a_gone_client_leaves_the_line() {
    let sink = Arc::new(RecordingSink::default());
    let report = Suspension::new("vm", ErrorPolicy::Report, DEFAULT_SUSPEND_TIMEOUT, sink);
    assert!(!report.holds(&outage(0)));
    let (s, _) = suspension(Duration::from_secs(300));
    let mut disagree = outage(0);
    disagree.no_majority = Some(quorum_core::vote::VoteError::NoMajority {
        offset: 0,
        length: 4096,
        votes: 1,
        threshold: 2,
    });
    assert!(!s.holds(&disagree), "a vote with no majority is reported");
    let log = Arc::new(Mutex::new(Vec::new()));
    let one = tokio::spawn(request(s.clone(), 1, vec![false, true], log.clone()));
    settle().await;
    let gone = tokio::spawn(request(s.clone(), 2, vec![true], log.clone()));
    settle().await;
    gone.abort();
    settle().await;
    s.resume().expect("suspended");
    one.await.expect("join").expect("1 succeeds");
    settle().await;
    assert_eq!(s.state(), VolumeState::Running);
    assert_eq!(*log.lock().expect("log"), [1, 1]);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_fails_the_held_requests_and_holds_no_more() {
    let (s, sink) = suspension(Duration::from_secs(300));
    let log = Arc::new(Mutex::new(Vec::new()));
    let one = tokio::spawn(request(s.clone(), 1, vec![false, true], log.clone()));
    settle().await;
    let two = tokio::spawn(request(s.clone(), 2, vec![true], log.clone()));
    settle().await;
    let started = tokio::time::Instant::now();
    s.shut_down();
    assert_eq!(one.await.expect("join"), Err("request 1 failed".into()));
    let e2 = two.await.expect("join").expect_err("2 fails");
    assert_eq!(started.elapsed(), Duration::ZERO, "at once");
    assert!(e2.contains("shutting down"), "{e2}");
    assert_eq!(*log.lock().expect("log"), [1], "2 never ran");
    assert_eq!(s.state(), VolumeState::Running);
    assert!(matches!(
        sink.events().last(),
        Some((
            _,
            Event::VolumeResumed {
                by: ResumedBy::Shutdown,
                held: 2
            }
        ))
    ));
    // A quorum failure from now on fails at once, and suspends nothing.
    let three = request(s.clone(), 3, vec![false, true], log.clone()).await;
    assert_eq!(three, Err("request 3 failed".into()));
    assert_eq!(s.state(), VolumeState::Running);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn gone_clients_are_neither_counted_nor_kept() {
    let (s, sink) = suspension(Duration::from_secs(300));
    let log = Arc::new(Mutex::new(Vec::new()));
    let one = tokio::spawn(request(s.clone(), 1, vec![false, true], log.clone()));
    settle().await;
    // A client that retries every few seconds while the volume is
    // suspended, each attempt given up: one held request, not a thousand.
    for id in 2..1002 {
        let gone = tokio::spawn(request(s.clone(), id, vec![true], log.clone()));
        settle().await;
        gone.abort();
        settle().await;
    }
    assert_eq!(s.suspended().map(|x| x.held), Some(1));
    assert!(s.lock().held.len() <= 2, "{} kept", s.lock().held.len());
    assert_eq!(s.resume().expect("suspended"), 1);
    one.await.expect("join").expect("1 succeeds");
    assert!(matches!(
        sink.events().last(),
        Some((
            _,
            Event::VolumeResumed {
                by: ResumedBy::Operator,
                held: 1
            }
        ))
    ));
}
