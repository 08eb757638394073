//! The server-wide budget of buffered request bytes (`max_buffered_bytes`).
//!
//! Memory is otherwise concurrency × `max_request_bytes`: 64 uploads of
//! 64 MiB would hold 4 GiB. Every request body, read buffer and large
//! answer takes its bytes from this budget before it fills them and gives
//! them back when it is dropped; a request that finds no room waits for it
//! until its deadline (`body_timeout`), then gets 503 `busy`.
//!
//! # Bytes as they arrive, and no deadlock
//!
//! An upload takes its bytes as they arrive, not all that its
//! `Content-Length` declares before the first one: eight request heads that
//! declare 64 MiB and send nothing would otherwise hold 512 MiB, and every
//! other request would wait for them until their `body_timeout`. A request
//! that has sent nothing holds nothing.
//!
//! Taking bytes piecemeal can deadlock: 64 uploads of 64 MiB that each got
//! 8 MiB of a 512 MiB budget all wait for room that only their own ends
//! would free. So every [`Reservation`] also says how much more it may still
//! ask for (its *need*: the rest of a declared length, or of
//! `max_request_bytes` for a chunked body), and the budget grants bytes
//! only while the holders could still all finish one after the other with
//! what is free: Dijkstra's banker's algorithm for one resource (sort the
//! holders by need; each must fit in what is free plus what those before it
//! gave back). A request refused for that reason waits like one refused for
//! lack of room. A need is a promise of the client's, so a client that
//! declares 64 MiB and stalls after one byte holds one byte and makes others
//! wait only as far as the budget could no longer see its upload through;
//! its `body_timeout` bounds that.
//!
//! Waiting requests are woken whenever bytes are given back and retry; the
//! budget is not first come, first served, so that one large request that
//! cannot fit yet never holds up small ones that can.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::ApiError;

/// The bytes that requests may buffer at once.
#[derive(Debug, Clone)]
pub struct Budget {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    total: u64,
    ledger: Mutex<Ledger>,
    /// Notified whenever bytes are given back.
    freed: Notify,
}

/// Who holds what.
#[derive(Debug)]
struct Ledger {
    free: u64,
    /// The reservations that hold bytes, by id.
    holders: HashMap<u64, Holding>,
    /// The sum of the holders' needs: while it fits in what is free, every
    /// holder can finish at once and the full check is not needed.
    needs: u64,
    next_id: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Holding {
    held: u64,
    /// The most the holder may still ask for.
    need: u64,
}

/// Bytes taken from a [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    shared: Arc<Shared>,
    id: u64,
}

impl Ledger {
    fn holding(&self, id: u64) -> Holding {
        self.holders.get(&id).copied().unwrap_or_default()
    }

    /// Whether every holder could finish, one after the other, with what
    /// is free and what those before it give back (need 0 first).
    fn safe(&self) -> bool {
        if self.needs <= self.free {
            return true;
        }
        let mut free = self.free;
        let mut waiting: Vec<(u64, u64)> = Vec::new();
        for h in self.holders.values() {
            if h.need == 0 {
                free += h.held;
            } else {
                waiting.push((h.need, h.held));
            }
        }
        waiting.sort_unstable();
        for (need, held) in waiting {
            if need > free {
                return false;
            }
            free += held;
        }
        true
    }

    /// Sets what `id` holds and needs.
    fn set(&mut self, id: u64, h: Holding) {
        let before = if h.held == 0 && h.need == 0 {
            self.holders.remove(&id)
        } else {
            self.holders.insert(id, h)
        };
        self.needs = self.needs - before.map_or(0, |b| b.need) + h.need;
    }

    /// Gives `id` `bytes` more (and `need` left after them) if there is
    /// room and the holders could all still finish.
    fn try_grant(&mut self, id: u64, bytes: u64, need: u64) -> bool {
        if bytes > self.free {
            return false;
        }
        let before = self.holding(id);
        self.free -= bytes;
        self.set(
            id,
            Holding {
                held: before.held + bytes,
                need,
            },
        );
        if self.safe() {
            return true;
        }
        self.free += bytes;
        self.set(id, before);
        false
    }
}

impl Budget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Budget {
        Budget {
            shared: Arc::new(Shared {
                total: bytes,
                ledger: Mutex::new(Ledger {
                    free: bytes,
                    holders: HashMap::new(),
                    needs: 0,
                    next_id: 0,
                }),
                freed: Notify::new(),
            }),
        }
    }

    /// The budget's size in bytes.
    pub fn total(&self) -> u64 {
        self.shared.total
    }

    /// A reservation of nothing yet, to grow with [`Budget::grow_to`].
    pub fn empty(&self) -> Reservation {
        let mut ledger = self.shared.lock();
        let id = ledger.next_id;
        ledger.next_id += 1;
        Reservation {
            shared: self.shared.clone(),
            id,
        }
    }

    /// Takes `bytes` at once, waiting for room until `deadline`.
    ///
    /// # Errors
    /// [`ApiError::Busy`] when there is no room by then.
    pub async fn reserve(&self, bytes: u64, deadline: Instant) -> Result<Reservation, ApiError> {
        let mut reservation = self.empty();
        self.grow_to(&mut reservation, bytes, 0, deadline).await?;
        Ok(reservation)
    }

    /// Makes `reservation` hold at least `bytes` in all, with at most
    /// `need` more to come after them, waiting for room until `deadline`.
    ///
    /// # Errors
    /// [`ApiError::Busy`] when there is no room by then.
    pub async fn grow_to(
        &self,
        reservation: &mut Reservation,
        bytes: u64,
        need: u64,
        deadline: Instant,
    ) -> Result<(), ApiError> {
        loop {
            let freed = self.shared.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so that a release between the
            // check and the wait is not missed.
            freed.as_mut().enable();
            {
                let mut ledger = self.shared.lock();
                let h = ledger.holding(reservation.id);
                if bytes <= h.held {
                    // A smaller need never makes the ledger unsafe.
                    let need = h.need.min(need);
                    ledger.set(reservation.id, Holding { held: h.held, need });
                    return Ok(());
                }
                if ledger.try_grant(reservation.id, bytes - h.held, need) {
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(self.busy(bytes));
            }
        }
    }

    fn busy(&self, bytes: u64) -> ApiError {
        ApiError::Busy(format!(
            "the server is buffering its limit of {} bytes (max_buffered_bytes) and found no room for {bytes} in time; try again",
            self.shared.total
        ))
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Reservation {
    /// The bytes held.
    pub fn bytes(&self) -> u64 {
        self.shared.lock().holding(self.id).held
    }

    /// Gives back what is held beyond `bytes`; nothing more is to come.
    pub fn shrink_to(&mut self, bytes: u64) {
        let mut ledger = self.shared.lock();
        let h = ledger.holding(self.id);
        let given = h.held.saturating_sub(bytes);
        ledger.set(
            self.id,
            Holding {
                held: h.held - given,
                need: 0,
            },
        );
        ledger.free += given;
        drop(ledger);
        if given > 0 {
            self.shared.freed.notify_waiters();
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut ledger = self.shared.lock();
        let h = ledger.holding(self.id);
        ledger.set(self.id, Holding::default());
        ledger.free += h.held;
        drop(ledger);
        if h.held == 0 {
            return;
        }
        self.shared.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const KIB: u64 = 1024;

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    #[tokio::test]
    async fn room_is_given_back_and_waiting_is_bounded() {
        let budget = Budget::new(8 * KIB);
        let mut first = budget.reserve(5 * KIB, soon()).await.expect("room");
        budget
            .grow_to(&mut first, 8 * KIB, 0, soon())
            .await
            .expect("room");
        assert_eq!(first.bytes(), 8 * KIB);
        let refused = budget.reserve(1, soon()).await.expect_err("no room");
        assert!(matches!(refused, ApiError::Busy(_)), "{refused}");
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move {
                budget
                    .reserve(4 * KIB, Instant::now() + Duration::from_secs(5))
                    .await
            }
        });
        // On this single-threaded runtime, yielding runs the waiter until
        // it parks on the budget.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "it waits while the room is taken");
        drop(first);
        waiting.await.expect("join").expect("room after the drop");
    }

    #[tokio::test]
    async fn an_empty_reservation_holds_nothing_and_shrinking_gives_back() {
        let budget = Budget::new(8 * KIB);
        let idle: Vec<Reservation> = (0..100).map(|_| budget.empty()).collect();
        let mut answer = budget.reserve(8 * KIB, soon()).await.expect("room");
        answer.shrink_to(3 * KIB);
        assert_eq!(answer.bytes(), 3 * KIB);
        budget
            .reserve(5 * KIB, soon())
            .await
            .expect("room given back");
        drop(idle);
    }

    /// Two uploads of 6 KiB in a budget of 8 KiB, growing 1 KiB at a time
    /// in turn: taken piecemeal without the banker's check, both would stop
    /// at 4 KiB and wait for each other until their deadline. Here one is
    /// held back so that the other finishes; then the second does.
    #[tokio::test]
    async fn piecemeal_uploads_never_wait_for_each_other() {
        let budget = Budget::new(8 * KIB);
        let upload = |budget: Budget| async move {
            let mut r = budget.empty();
            for k in 1..=6 {
                let deadline = Instant::now() + Duration::from_secs(5);
                budget
                    .grow_to(&mut r, k * KIB, (6 - k) * KIB, deadline)
                    .await?;
                tokio::task::yield_now().await;
            }
            Ok::<_, ApiError>(())
        };
        let started = Instant::now();
        let (a, b) = tokio::join!(upload(budget.clone()), upload(budget.clone()));
        a.expect("the first upload");
        b.expect("the second upload");
        assert!(started.elapsed() < Duration::from_secs(1));
        budget
            .reserve(8 * KIB, soon())
            .await
            .expect("all given back");
    }

    #[test]
    fn the_ledger_is_safe_only_if_some_order_lets_every_holder_finish() {
        let ledger = |free: u64, holders: &[(u64, u64)]| {
            let mut l = Ledger {
                free,
                holders: HashMap::new(),
                needs: 0,
                next_id: holders.len() as u64,
            };
            for (i, &(held, need)) in holders.iter().enumerate() {
                l.set(i as u64, Holding { held, need });
            }
            l
        };
        assert!(ledger(0, &[(4, 0), (4, 4)]).safe());
        assert!(!ledger(0, &[(4, 2), (4, 2)]).safe());
        assert!(ledger(2, &[(4, 2), (2, 6)]).safe());
        assert!(!ledger(1, &[(4, 2), (2, 6)]).safe());
        let mut l = ledger(4, &[(3, 3), (3, 3)]);
        assert!(l.try_grant(0, 2, 1));
        assert!(
            !l.try_grant(1, 2, 1),
            "would leave nothing for needs of 1 and 1"
        );
        assert_eq!(
            (l.free, l.holding(1).held),
            (2, 3),
            "a refusal changes nothing"
        );
        assert!(l.try_grant(1, 1, 2));
        assert_eq!(l.needs, 3);
        l.set(0, Holding::default());
        assert_eq!((l.needs, l.holders.len()), (2, 1));
    }
}
