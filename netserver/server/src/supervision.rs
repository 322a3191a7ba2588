//! The net server's part in supervising its driver: it reports a driver it found faulty (a
//! protocol violation, a stalled transmit ring) to the supervisor, which restarts it, and it
//! reads the supervisor's restart log to say how long each recovery took.
//!
//! | grant | what |
//! |---|---|
//! | notification `driver_faulty` (signal only) | asks the supervisor to restart the driver |
//! | region `restart_log` (read only) | the supervisor's restart records (`sysdesc::restart_log`) |
//!
//! Both are optional: without them a faulty driver is only ignored until it restarts on its own.

use alloc::vec::Vec;

use sel4::{Cap, Notification};
use sel4_rt::shared::SharedRegion;
use sysdesc::restart_log::{self, Record, RECORD_SIZE};

/// The name of the driver component in the restart log (`config` key `driver`).
pub fn driver_name() -> &'static str {
    sel4_rt::config("driver").unwrap_or("virtio-net")
}

/// Asks the supervisor to restart the driver.
pub struct Reporter(Cap<Notification>);

impl Reporter {
    pub fn from_grants() -> Option<Reporter> {
        sel4_rt::cap::<Notification>("driver_faulty").map(Reporter)
    }

    pub fn report(&self) {
        self.0.signal();
    }
}

/// The supervisor's restart log, read only.
pub struct RestartLog(SharedRegion);

impl RestartLog {
    pub fn from_grants() -> Option<RestartLog> {
        SharedRegion::named("restart_log").map(RestartLog)
    }

    fn count(&self) -> u64 {
        self.0.atomic_u64(0).map(|w| w.load(core::sync::atomic::Ordering::SeqCst)).unwrap_or(0)
    }

    /// Record `n`, if it is still in the log and was not overwritten while being read.
    fn record(&self, n: u64) -> Option<Record> {
        let mut bytes = [0u8; RECORD_SIZE];
        self.0.read(restart_log::offset(n), &mut bytes).ok()?;
        let count = self.count();
        (n < count && count - n <= restart_log::RECORDS).then(|| Record::decode(&bytes))
    }

    /// The newest records of component `name`, newest first, at most `max`.
    pub fn recent(&self, name: &str, max: usize) -> Vec<Record> {
        let count = self.count();
        let oldest = count.saturating_sub(restart_log::RECORDS);
        (oldest..count).rev().filter_map(|n| self.record(n)).filter(|r| r.name_str() == name).take(max).collect()
    }
}
