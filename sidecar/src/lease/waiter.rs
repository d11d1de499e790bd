//! The waiter: a task with its own connection that blocks on the current
//! holder's session lock and reports when that lock becomes free, i.e. when
//! the holder's database session ended (or it moved to a new lock on release
//! and hand-over). Costs one statement per [`LOCK_WAIT`] while idle.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::backoff::Backoff;
use super::store::{Ctx, LockWait, WaiterConn};

/// The waiter found the session lock `key` free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Released {
    pub key: i64,
    /// True when the waiter first saw the lock held and then got it: the
    /// session ended while we watched. False when it was free at the first
    /// look (e.g. after our own reconnect), when nothing is known about when
    /// it ended.
    pub observed_held: bool,
}

#[derive(Debug, Default)]
struct Shared {
    backend_id: Option<i64>,
    blocked_on: Option<i64>,
}

pub(crate) struct Waiter {
    target: watch::Sender<Option<i64>>,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Waiter {
    pub(crate) fn spawn(
        ctx: Arc<Ctx>,
        conn: WaiterConn,
        events: mpsc::UnboundedSender<Released>,
    ) -> Waiter {
        let (target, target_rx) = watch::channel(None);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = tokio::spawn(run(ctx, conn, target_rx, shared.clone(), events));
        Waiter {
            target,
            shared,
            task,
        }
    }

    /// Watches session lock `key` (or nothing). Returns the backend id of the
    /// waiter connection when it is blocked on another key and must be
    /// interrupted (by the caller, from another connection).
    pub(crate) fn set_target(&self, key: Option<i64>) -> Option<i64> {
        if *self.target.borrow() == key {
            return None;
        }
        self.target.send_replace(key);
        let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        match shared.blocked_on {
            Some(blocked) if Some(blocked) != key => shared.backend_id,
            _ => None,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // Dropping the task drops its connection, which frees any lock it took.
        self.task.abort();
    }
}

async fn run(
    ctx: Arc<Ctx>,
    conn: WaiterConn,
    mut target: watch::Receiver<Option<i64>>,
    shared: Arc<Mutex<Shared>>,
    events: mpsc::UnboundedSender<Released>,
) {
    let mut conn = Some(conn);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let mut current = match conn.take() {
            Some(current) => current,
            None => match WaiterConn::connect(&ctx).await {
                Ok(current) => {
                    backoff.reset();
                    current
                }
                Err(error) => {
                    tracing::debug!(%error, "lease waiter cannot connect; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            },
        };
        set_shared(&shared, Some(current.backend_id()), None);
        let result = serve(&ctx, &mut current, &mut target, &shared, &events).await;
        set_shared(&shared, None, None);
        match result {
            Ok(()) => return,
            Err(error) => {
                tracing::debug!(%error, "lease waiter connection failed; reconnecting");
                drop(current);
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

fn set_shared(shared: &Mutex<Shared>, backend_id: Option<i64>, blocked_on: Option<i64>) {
    let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
    shared.backend_id = backend_id;
    shared.blocked_on = blocked_on;
}

fn set_blocked(shared: &Mutex<Shared>, blocked_on: Option<i64>) {
    shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .blocked_on = blocked_on;
}

/// Serves targets on one connection. `Ok(())` when the elector is gone.
async fn serve(
    ctx: &Ctx,
    conn: &mut WaiterConn,
    target: &mut watch::Receiver<Option<i64>>,
    shared: &Mutex<Shared>,
    events: &mpsc::UnboundedSender<Released>,
) -> Result<(), super::LeaseError> {
    // The key we have seen held on this connection (so a grant means the
    // holder's session ended while we watched).
    let mut seen_held: Option<i64> = None;
    loop {
        let Some(key) = *target.borrow_and_update() else {
            if target.changed().await.is_err() {
                return Ok(());
            }
            continue;
        };
        if seen_held != Some(key) {
            if conn.try_lock(ctx, key).await? {
                conn.unlock(ctx, key).await?;
                let _ = events.send(Released {
                    key,
                    observed_held: false,
                });
                if !wait_for_other(target, key).await {
                    return Ok(());
                }
                continue;
            }
            seen_held = Some(key);
        }
        set_blocked(shared, Some(key));
        let outcome = conn.lock(ctx, key).await;
        set_blocked(shared, None);
        match outcome? {
            LockWait::Acquired => {
                conn.unlock(ctx, key).await?;
                seen_held = None;
                let _ = events.send(Released {
                    key,
                    observed_held: true,
                });
                if !wait_for_other(target, key).await {
                    return Ok(());
                }
            }
            // Still held after LOCK_WAIT: wait again.
            LockWait::TimedOut => {}
            // Interrupted because the target changed (or by accident): look
            // again from scratch.
            LockWait::Canceled => seen_held = None,
        }
    }
}

/// Waits until the target is no longer `key`; false when the elector is gone.
async fn wait_for_other(target: &mut watch::Receiver<Option<i64>>, key: i64) -> bool {
    loop {
        if *target.borrow_and_update() != Some(key) {
            return true;
        }
        if target.changed().await.is_err() {
            return false;
        }
    }
}
