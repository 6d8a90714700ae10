//! Starting deliveries a moment after their calls answered, in batches.
//!
//! A send's code is handed to the notifier held, and started `delay` after the call's audit
//! event is written (`Engine::finish` says why). One task per engine does that for every call:
//! calls push onto a queue in answer order (so in due order), and the task sleeps until the
//! oldest entry is due, then starts every due message with one notifier call. A send without
//! an account pushes an empty entry, so both kinds of call do the same work here.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::ports::{Held, Notifier};

/// The queue of calls whose delivery starts later.
pub(crate) struct Notices {
    queue: parking_lot::Mutex<VecDeque<(Instant, Option<Held>)>>,
    wake: Notify,
    delay: Duration,
}

/// How often an idle drainer checks that its engine still exists.
const IDLE_CHECK: Duration = Duration::from_secs(1);

impl Notices {
    /// A queue and its drainer task, which ends within [`IDLE_CHECK`] of the queue's drop.
    pub(crate) fn start(notifier: Arc<dyn Notifier>, delay: Duration) -> Arc<Notices> {
        let notices = Arc::new(Notices { queue: Default::default(), wake: Notify::new(), delay });
        tokio::spawn(drain(Arc::downgrade(&notices), notifier));
        notices
    }

    /// Starts `held` (nothing, for a rehearsal) `delay` from now.
    pub(crate) fn push(&self, held: Option<Held>) {
        let due = Instant::now() + self.delay;
        let was_empty = {
            let mut queue = self.queue.lock();
            queue.push_back((due, held));
            queue.len() == 1
        };
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Takes every entry due at `now`; returns them and when the next one is due.
    fn due(&self, now: Instant) -> (Vec<Held>, Option<Instant>) {
        let mut queue = self.queue.lock();
        let mut held = Vec::new();
        while let Some(&(due, _)) = queue.front() {
            if due > now {
                return (held, Some(due));
            }
            held.extend(queue.pop_front().and_then(|(_, h)| h));
        }
        (held, None)
    }
}

async fn drain(notices: Weak<Notices>, notifier: Arc<dyn Notifier>) {
    loop {
        let Some(n) = notices.upgrade() else { return };
        let (held, next) = n.due(Instant::now());
        notifier.start(held);
        match next {
            Some(at) => tokio::time::sleep_until(at).await,
            None => {
                // A push after `due` looked leaves a permit, so this returns at once.
                let _ = tokio::time::timeout(IDLE_CHECK, n.wake.notified()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{NotifyError, OutboundMessage};

    #[derive(Default)]
    struct Started(parking_lot::Mutex<Vec<Vec<u64>>>);

    impl Notifier for Started {
        fn rehearse(&self, _: OutboundMessage) -> Result<(), NotifyError> {
            Ok(())
        }
        fn enqueue(&self, _: OutboundMessage) -> Result<Held, NotifyError> {
            Err(NotifyError::Closed)
        }
        fn start(&self, held: Vec<Held>) {
            if !held.is_empty() {
                self.0.lock().push(held.into_iter().map(|h| h.0).collect());
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn starts_each_held_message_once_after_the_delay_in_order() {
        let started = Arc::new(Started::default());
        let notices = Notices::start(started.clone(), Duration::from_millis(10));
        notices.push(Some(Held(1)));
        notices.push(None);
        notices.push(Some(Held(2)));
        tokio::time::sleep(Duration::from_millis(9)).await;
        assert!(started.0.lock().is_empty(), "nothing starts before the delay");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(*started.0.lock(), vec![vec![1, 2]]);
        tokio::time::sleep(Duration::from_millis(5)).await;
        notices.push(Some(Held(3)));
        tokio::time::sleep(Duration::from_millis(11)).await;
        assert_eq!(*started.0.lock(), vec![vec![1, 2], vec![3]]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_drainer_ends_once_the_queue_is_gone() {
        let started = Arc::new(Started::default());
        let notices = Notices::start(started.clone(), Duration::from_millis(10));
        drop(notices);
        tokio::time::sleep(IDLE_CHECK * 2).await;
        assert_eq!(Arc::strong_count(&started), 1, "the drainer still holds the notifier");
    }
}
