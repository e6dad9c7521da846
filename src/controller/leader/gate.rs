//! This replica's right to act, as the Lease renewals last established it. A leader's right
//! lapses on its own clock, before any standby may take the Lease over, so the two never act at
//! once even when a renewal hangs or the leader is partitioned from the API server mid-pass.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::lease::Leadership;

/// How long each right lasts and how often it is renewed, from the Lease duration (client-go's
/// proportions: 15 s lease, 10 s renew deadline, 2–3 s between tries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a Lease holds without renewal, for the standbys.
    pub lease: Duration,
    /// How long after it started renewing the leader may act without a newer renewal. The
    /// margin to `lease` absorbs clock skew and writes already on the wire.
    pub renew_deadline: Duration,
    /// Time between tries, leader and standby alike.
    pub retry: Duration,
}

impl Timing {
    /// The timing for a Lease of `lease`.
    pub fn for_lease(lease: Duration) -> Self {
        Self { lease, renew_deadline: lease * 2 / 3, retry: lease / 5 }
    }
}

/// What this replica may do, until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Term {
    /// Another replica leads (or the Lease could not be read): act on nothing.
    Standby,
    /// We hold the Lease: act until this instant unless a renewal extends it.
    Until(Instant),
    /// No election (the server has no Lease API, or none was asked for): always act.
    Always,
}

/// The term after one attempt that started at `attempt_started` (`None`: it timed out). A
/// renewal holds until the renew deadline counted from the attempt's start (not from its
/// answer: the Lease says it was renewed at about the time the attempt started). An attempt
/// that could not tell (the Lease unreadable, a write conflict, a timeout) leaves the previous
/// term to run out by itself, so one slow answer from the API server does not stop a pass.
pub fn next_term(
    previous: Term,
    attempt: Option<&Leadership>,
    attempt_started: Instant,
    timing: Timing,
) -> Term {
    match attempt {
        Some(Leadership::Leader) => Term::Until(attempt_started + timing.renew_deadline),
        Some(Leadership::Follower(holder)) if !holder.is_empty() => Term::Standby,
        Some(Leadership::Follower(_)) | None => match previous {
            Term::Always => Term::Standby,
            kept => kept,
        },
        Some(Leadership::Unsupported) => Term::Always,
    }
}

/// Whether a term allows acting at `now`.
pub fn allows(term: Term, now: Instant) -> bool {
    match term {
        Term::Standby => false,
        Term::Until(deadline) => now < deadline,
        Term::Always => true,
    }
}

/// A view of this replica's term, cheap to clone: checked before every side effect.
#[derive(Clone, Debug)]
pub struct Gate {
    term: watch::Receiver<Term>,
}

impl Default for Gate {
    fn default() -> Self {
        Self::always()
    }
}

impl Gate {
    /// A gate fed by `term`.
    pub(super) fn new(term: watch::Receiver<Term>) -> Self {
        Self { term }
    }

    /// A gate that is always open: a single replica without election.
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(Term::Always);
        // The value never changes; the receiver keeps it after the sender is gone.
        drop(tx);
        Self { term: rx }
    }

    /// May this replica act now?
    pub fn may_act(&self) -> bool {
        allows(*self.term.borrow(), Instant::now())
    }

    /// Resolves when this replica may act.
    pub async fn acquired(&mut self) {
        while !self.may_act() {
            if self.term.changed().await.is_err() {
                // The renewal task is gone: nothing will open the gate again.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Resolves when this replica may no longer act: a standby took the Lease, or the renew
    /// deadline passed without a renewal.
    pub async fn lost(&mut self) {
        loop {
            let term = *self.term.borrow_and_update();
            match term {
                Term::Standby => return,
                Term::Until(deadline) if Instant::now() >= deadline => return,
                Term::Until(deadline) => {
                    tokio::select! {
                        changed = self.term.changed() => if changed.is_err() {
                            // No more renewals: the right lapses at the deadline.
                            tokio::time::sleep_until(deadline.into()).await;
                            return;
                        },
                        () = tokio::time::sleep_until(deadline.into()) => {}
                    }
                }
                Term::Always => {
                    if self.term.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_gives_a_term_ending_before_a_standby_may_take_over() {
        let timing = Timing::for_lease(Duration::from_secs(15));
        assert_eq!(timing.renew_deadline, Duration::from_secs(10));
        assert_eq!(timing.retry, Duration::from_secs(3));
        let t0 = Instant::now();
        let held = Term::Until(t0 + Duration::from_secs(4));
        let renewed = Term::Until(t0 + Duration::from_secs(10));
        let other = Leadership::Follower("other".into());
        let unknown = Leadership::Follower(String::new());
        let cases = [
            ("standby wins the Lease", Term::Standby, Some(&Leadership::Leader), renewed),
            ("leader renews", held, Some(&Leadership::Leader), renewed),
            ("another holds it", Term::Standby, Some(&other), Term::Standby),
            ("another took it over", held, Some(&other), Term::Standby),
            ("Lease unreadable: the term runs out", held, Some(&unknown), held),
            ("timed out: the term runs out", held, None, held),
            ("unreadable standby stays standby", Term::Standby, Some(&unknown), Term::Standby),
            ("no Lease API", Term::Standby, Some(&Leadership::Unsupported), Term::Always),
        ];
        for (name, previous, attempt, want) in cases {
            assert_eq!(next_term(previous, attempt, t0, timing), want, "{name}");
        }
        let term = next_term(Term::Standby, Some(&Leadership::Leader), t0, timing);
        assert!(allows(term, t0 + Duration::from_millis(9_999)));
        assert!(!allows(term, t0 + timing.renew_deadline), "lapses at the deadline, renewed or not");
        assert!(timing.renew_deadline + timing.retry < timing.lease, "a renewal is retried before it lapses");
    }

    #[tokio::test]
    async fn the_gate_closes_at_the_deadline_without_a_renewal_and_opens_with_one() {
        let (tx, rx) = watch::channel(Term::Standby);
        let mut gate = Gate::new(rx);
        assert!(!gate.may_act());
        tx.send(Term::Until(Instant::now() + Duration::from_millis(150))).unwrap();
        tokio::time::timeout(Duration::from_secs(1), gate.acquired()).await.expect("opened");
        assert!(gate.may_act());
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(1), gate.lost()).await.expect("closed by itself");
        assert!(started.elapsed() >= Duration::from_millis(100) && !gate.may_act());
        // A renewal extends the term; a standby's answer ends it at once.
        tx.send(Term::Until(Instant::now() + Duration::from_secs(60))).unwrap();
        gate.acquired().await;
        let lost = tokio::spawn({
            let mut gate = gate.clone();
            async move { gate.lost().await }
        });
        tx.send(Term::Until(Instant::now() + Duration::from_secs(120))).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!lost.is_finished(), "renewed: still leading");
        tx.send(Term::Standby).unwrap();
        tokio::time::timeout(Duration::from_secs(1), lost).await.expect("closed").unwrap();
        assert!(Gate::always().may_act());
    }
}
