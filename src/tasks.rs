//! Small task helpers shared across modules.

use tokio::task::JoinHandle;

/// Aborts the task when dropped, so a task never outlives its owner
/// (a session's event-loop pump, a supervised device).
#[derive(Debug)]
pub struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
