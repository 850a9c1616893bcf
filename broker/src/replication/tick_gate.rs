//! The async runtime partition groups run openraft on: tokio, except that a quiet group's
//! tick timer sleeps until the group wakes. openraft wakes every group's tick task once per
//! 1.5 heartbeat intervals even while its ticks are disabled, which with ten thousand
//! quiet partitions is tens of thousands of wake-ups a second for nothing.
//!
//! A `TickGate` belongs to one group. `run_gated` runs the group's `Raft::new` with the
//! gate in a task-local; every task openraft spawns from there inherits it (`spawn`), and
//! `sleep_until`, which openraft 0.9 uses only for the tick timer, does not end while the
//! gate is shut. What lives elsewhere: when a group goes quiet or wakes (`partition`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};

tokio::task_local! {
    static GATE: Arc<TickGate>;
}

/// Whether one group's tick timer may run.
#[derive(Debug, Default)]
pub struct TickGate {
    shut: AtomicBool,
    /// The tick task, when it waits for the gate to open.
    waiting: AtomicWaker,
    /// Tick sleeps that ended, for tests to see that a shut gate stops them.
    #[cfg(test)]
    ended: std::sync::atomic::AtomicU64,
}

impl TickGate {
    pub fn new(shut: bool) -> Arc<TickGate> {
        Arc::new(TickGate { shut: AtomicBool::new(shut), ..Default::default() })
    }

    /// Shuts the gate (the group went quiet: nothing for its ticks to do) or opens it,
    /// waking the tick task, whose sleep has long ended by then.
    pub fn set_shut(&self, shut: bool) {
        self.shut.store(shut, Ordering::SeqCst);
        if !shut {
            self.waiting.wake();
        }
    }

    #[cfg(test)]
    pub fn ticks_ended(&self) -> u64 {
        self.ended.load(Ordering::SeqCst)
    }
}

/// Runs `fut` (a group's `Raft::new`) with `gate` for every task it spawns.
pub async fn run_gated<F: Future>(gate: Arc<TickGate>, fut: F) -> F::Output {
    GATE.scope(gate, fut).await
}

/// tokio, with gated tick sleeps.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GatedRuntime;

/// A sleep; one made by `sleep_until` in a gated task also waits for its gate to be open.
pub struct GatedSleep {
    sleep: Pin<Box<tokio::time::Sleep>>,
    gate: Option<Arc<TickGate>>,
}

impl Future for GatedSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(gate) = &self.gate {
            if gate.shut.load(Ordering::SeqCst) {
                gate.waiting.register(cx.waker());
                // Checked again after registering: an open in between woke no one.
                if gate.shut.load(Ordering::SeqCst) {
                    return Poll::Pending;
                }
            }
        }
        let ended = self.sleep.as_mut().poll(cx);
        #[cfg(test)]
        if let (Poll::Ready(()), Some(gate)) = (&ended, &self.gate) {
            gate.ended.fetch_add(1, Ordering::Relaxed);
        }
        ended
    }
}

type Tokio = TokioRuntime;

impl AsyncRuntime for GatedRuntime {
    type JoinError = <Tokio as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::JoinHandle<T>;
    type Sleep = GatedSleep;
    type Instant = <Tokio as AsyncRuntime>::Instant;
    type TimeoutError = <Tokio as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Tokio as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = <Tokio as AsyncRuntime>::ThreadLocalRng;
    type OneshotSender<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <Tokio as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        match GATE.try_with(Arc::clone) {
            Ok(gate) => Tokio::spawn(GATE.scope(gate, future)),
            Err(_) => Tokio::spawn(future),
        }
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        GatedSleep { sleep: Box::pin(tokio::time::sleep(duration)), gate: None }
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        GatedSleep { sleep: Box::pin(tokio::time::sleep_until(deadline)), gate: GATE.try_with(Arc::clone).ok() }
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        Tokio::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        Tokio::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        Tokio::thread_rng()
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        Tokio::oneshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tick_sleep_waits_for_its_gate_and_other_sleeps_do_not() {
        let gate = TickGate::new(true);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(10);
        let task = tokio::spawn(run_gated(gate.clone(), async move {
            // Spawned from a gated task: inherits the gate.
            let inner = GatedRuntime::spawn(async move {
                GatedRuntime::sleep(Duration::from_millis(10)).await;
                GatedRuntime::sleep_until(deadline).await;
            });
            inner.await.expect("inner task")
        }));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!task.is_finished(), "a tick sleep ended while its gate was shut");
        assert_eq!(gate.ticks_ended(), 0);
        gate.set_shut(false);
        tokio::time::timeout(Duration::from_secs(1), task).await.expect("woken when the gate opened").expect("task");
        assert_eq!(gate.ticks_ended(), 1);
        // Outside any gated task a tick sleep is a plain sleep.
        tokio::time::timeout(Duration::from_secs(1), GatedRuntime::sleep_until(tokio::time::Instant::now() + Duration::from_millis(5)))
            .await
            .expect("ungated sleep ends");
    }
}
