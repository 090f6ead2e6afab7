//! [`RunToCompletion`]: once a request has been sent upstream, its outcome is metered and
//! recorded however the client behaves. hyper drops a handler's future when the client hangs up
//! (hyperium/hyper#2728), which would leave a request the upstream bills for with no record and
//! no debit; this wrapper hands whatever is left of the future to a background task instead.
//! Nothing is spawned while the client stays: the common path costs one box.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio_util::task::TaskTracker;

/// Set once the caller of a [`RunToCompletion`] went away: whatever the future produces then
/// reaches nobody (the usage record says so).
#[derive(Debug, Clone, Default)]
pub(crate) struct HungUp(Arc<AtomicBool>);

impl HungUp {
    /// Whether the caller went away before the future completed.
    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A future that finishes even if its caller stops polling it.
pub(crate) struct RunToCompletion<F: Future<Output = T> + Send + 'static, T: Send + 'static> {
    future: Option<Pin<Box<F>>>,
    tasks: TaskTracker,
    hung_up: HungUp,
}

impl<F: Future<Output = T> + Send + 'static, T: Send + 'static> RunToCompletion<F, T> {
    /// Wraps `future`; if dropped before it completes, `hung_up` is set and the rest runs on
    /// `tasks` (which shutdown waits for), its output dropped there.
    pub(crate) fn new(future: F, tasks: &TaskTracker, hung_up: HungUp) -> Self {
        RunToCompletion {
            future: Some(Box::pin(future)),
            tasks: tasks.clone(),
            hung_up,
        }
    }
}

impl<F: Future<Output = T> + Send + 'static, T: Send + 'static> Future for RunToCompletion<F, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        // Polled again after it completed: a caller's bug, and nothing is left to do.
        let Some(future) = self.future.as_mut() else {
            return Poll::Pending;
        };
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        Poll::Ready(output)
    }
}

impl<F: Future<Output = T> + Send + 'static, T: Send + 'static> Drop for RunToCompletion<F, T> {
    fn drop(&mut self) {
        let Some(future) = self.future.take() else {
            return;
        };
        self.hung_up.0.store(true, Ordering::Release);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                self.tasks.spawn_on(
                    async move {
                        drop(future.await);
                    },
                    &runtime,
                );
            }
            // No runtime (the process is going down): the journal has what was recorded so far.
            Err(_) => tracing::warn!("a request in flight could not finish: no runtime"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn finishes_in_the_background_when_its_caller_goes_away() {
        let tasks = TaskTracker::new();
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let hung_up = HungUp::default();
        let seen = hung_up.clone();
        let work = RunToCompletion::new(
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                // What the work sees when it ends: its caller is gone.
                flag.store(seen.get(), Ordering::SeqCst);
            },
            &tasks,
            hung_up.clone(),
        );
        // The caller gives up long before the work is done.
        assert!(tokio::time::timeout(Duration::from_millis(1), work).await.is_err());
        assert!(hung_up.get() && !done.load(Ordering::SeqCst));
        tasks.close();
        tasks.wait().await;
        assert!(done.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn spawns_nothing_when_polled_to_the_end() {
        let tasks = TaskTracker::new();
        let hung_up = HungUp::default();
        assert_eq!(RunToCompletion::new(async { 7 }, &tasks, hung_up.clone()).await, 7);
        assert!(tasks.is_empty() && !hung_up.get());
    }
}
