//! The wake-up bus: a broadcast of topics (`queue:<name>`, `job:<id>`, or `*` for "anything may
//! have changed"). A wake-up only says "look again": a waiter that misses one (it lagged, or
//! the hint came from another process without NOTIFY) still finds the change at its next poll,
//! so nothing is lost when hints are.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

/// Wake-ups buffered per subscriber before it is told it lagged (and simply re-checks).
const CAPACITY: usize = 4096;

#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<str>>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    pub fn new() -> Self {
        Bus {
            tx: broadcast::channel(CAPACITY).0,
        }
    }

    pub fn publish(&self, topic: &str) {
        // No subscribers is fine: nobody is waiting.
        let _ = self.tx.send(Arc::from(topic));
    }

    /// Subscribe before checking the database, then wait: a change made in between is then
    /// either seen by the check or announced to the subscription.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
        }
    }
}

pub struct Subscription {
    rx: broadcast::Receiver<Arc<str>>,
}

impl Subscription {
    /// Waits until `topic` (or `*`) is published, or `timeout` passes. Returns true when woken
    /// (or when wake-ups were lost to lag, which means "look again" too).
    pub async fn wait_for(&mut self, topic: &str, timeout: Duration) -> bool {
        self.wait_until(|t| t == topic, timeout).await
    }

    /// Like `wait_for`, for any topic `wanted` accepts.
    pub async fn wait_until(&mut self, wanted: impl Fn(&str) -> bool, timeout: Duration) -> bool {
        let wait = async {
            loop {
                match self.rx.recv().await {
                    Ok(t) if wanted(&t) || &*t == "*" => return true,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => return true,
                    Err(broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_for_their_topic_or_everything() {
        let bus = Bus::new();
        let mut sub = bus.subscribe();
        bus.publish("queue:other");
        bus.publish("queue:mail");
        assert!(sub.wait_for("queue:mail", Duration::from_secs(5)).await);
        bus.publish("*");
        assert!(sub.wait_for("job:1", Duration::from_secs(5)).await);
        let start = std::time::Instant::now();
        assert!(!sub.wait_for("job:1", Duration::from_millis(20)).await);
        assert!(start.elapsed() >= Duration::from_millis(20));
    }
}
