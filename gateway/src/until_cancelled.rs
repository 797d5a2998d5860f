//! A task that stops when the gateway's cancellation token fires.
//!
//! `async move { select! { () = task => {}, () = cancel.cancelled() => {} } }` would store
//! `task` twice in the spawned future (once as the captured variable, once moved into the
//! `select!`), doubling every connection task's allocation; this struct holds it once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pin_project_lite::pin_project! {
    /// Runs `task` until it finishes or `cancel` fires, whichever comes first.
    pub(crate) struct UntilCancelled<F> {
        #[pin]
        task: F,
        #[pin]
        cancelled: WaitForCancellationFutureOwned,
    }
}

impl<F> UntilCancelled<F> {
    pub(crate) fn new(task: F, cancel: CancellationToken) -> Self {
        Self {
            task,
            cancelled: cancel.cancelled_owned(),
        }
    }
}

impl<F: Future<Output = ()>> Future for UntilCancelled<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.cancelled.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        this.task.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn holds_the_task_once_and_stops_on_cancel() {
        let task = async {
            let big = [0u8; 4096];
            tokio::time::sleep(Duration::from_secs(3600)).await;
            std::hint::black_box(big);
        };
        let task_size = std::mem::size_of_val(&task);
        let cancel = CancellationToken::new();
        let wrapped = UntilCancelled::new(task, cancel.clone());
        assert!(
            std::mem::size_of_val(&wrapped) < task_size + 256,
            "{} vs {task_size}",
            std::mem::size_of_val(&wrapped)
        );
        let running = tokio::spawn(wrapped);
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("stopped by the token")
            .expect("no panic");
    }

    #[tokio::test]
    async fn finishes_with_the_task() {
        let cancel = CancellationToken::new();
        UntilCancelled::new(async {}, cancel).await;
    }
}
