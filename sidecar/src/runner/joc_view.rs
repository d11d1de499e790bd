//! js7: what the runner does with each look at JOC's tables besides
//! deciding: the metrics of JOC's view, and the pod annotation
//! `joc-ha.dev/joc-view` (when: `js7::look::note_due`, a pure table).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::warn;

use super::Runner;
use crate::js7::JocView;
use crate::js7::look::{Look, NoteWritten, note_due};
use crate::kubernetes::ClusterApi;

/// The annotation's writer: the loop hands over the latest note and goes
/// on; one task writes them in order (the newest wins, none waits on the
/// API server inside a flow).
pub struct JocNotes {
    last: Option<NoteWritten>,
    tx: watch::Sender<Option<String>>,
    /// Set by the writer when a write failed: the next look writes again
    /// (a missed move of JOC's active member must not wait for the 30 s).
    failed: Arc<AtomicBool>,
}

impl JocNotes {
    pub fn start(api: ClusterApi) -> JocNotes {
        let (tx, mut rx) = watch::channel(None::<String>);
        let failed = Arc::new(AtomicBool::new(false));
        let failure = failed.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let note = rx.borrow_and_update().clone();
                if let Some(note) = note
                    && let Err(error) = api.write_joc_view(&note).await
                {
                    warn!(%error, "cannot publish JOC's view on this pod");
                    failure.store(true, Ordering::Relaxed);
                }
            }
        });
        JocNotes {
            last: None,
            tx,
            failed,
        }
    }
}

impl Runner {
    /// A look at JOC's tables succeeded: its metrics, and the annotation
    /// when one is due.
    pub(super) fn looked_at_joc(&mut self, view: &JocView) {
        let Some(settings) = &self.config.joc else {
            return;
        };
        let look = Look::of(view, &settings.member_id);
        self.metrics.joc_looked(&look);
        let now = Instant::now();
        if self.joc_notes.failed.swap(false, Ordering::Relaxed) {
            self.joc_notes.last = None;
        }
        if note_due(self.joc_notes.last.as_ref(), &look, now) {
            let note = look.note(jiff::Timestamp::now()).to_annotation();
            let _ = self.joc_notes.tx.send(Some(note));
            self.joc_notes.last = Some(NoteWritten {
                has_own_row: look.own_age_s.is_some(),
                member_id: look.member_id,
                at: now,
            });
        }
    }
}
