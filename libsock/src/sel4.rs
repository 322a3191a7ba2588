//! The seL4 transport: how an application component reaches the net server.
//!
//! The system description gives the application three things, by name:
//! * `net` — a badged endpoint to the net server (the badge is the client's identity; the
//!   server can only ever act on sockets of the client it names);
//! * `net-wake` — a notification the server signals when a socket the client waits on changes;
//! * `net-data` — the client's data area, a region shared with the server.
//!
//! A control round trip is one `seL4_Call` carrying the encoded request as a byte message
//! ([`sel4::bytes`]: label = byte count, bytes in the message registers).

use core::time::Duration;

use net_api::{DataRegion, Errno};
use sel4::{Cap, Endpoint, Notification};
use sel4_rt::shared::SharedRegion;

use crate::{Transport, Wake};

/// The capability and region names an application is granted (see the module docs).
pub const ENDPOINT: &str = "net";
pub const WAKE: &str = "net-wake";
pub const DATA: &str = "net-data";

/// The data area as the net-api copy code sees it.
pub struct DataArea(SharedRegion);

impl DataRegion for DataArea {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), Errno> {
        self.0.read(offset, out).map_err(|_| Errno::EFAULT)
    }
    fn write(&self, offset: usize, data: &[u8]) -> Result<(), Errno> {
        self.0.write(offset, data).map_err(|_| Errno::EFAULT)
    }
}

/// One application's connection to the net server over seL4 IPC.
pub struct Sel4Transport {
    server: Cap<Endpoint>,
    wake: Cap<Notification>,
    area: DataArea,
    /// Threads of this component parked for one another (each blocks on its own notification).
    parked: sel4_rt::sync::Event,
}

impl Sel4Transport {
    /// The transport the system description set up for this component; `None` when one of
    /// the three grants is missing.
    pub fn from_start_info() -> Option<Self> {
        Some(Sel4Transport {
            server: sel4_rt::cap(ENDPOINT)?,
            wake: sel4_rt::cap(WAKE)?,
            area: DataArea(SharedRegion::named(DATA)?),
            parked: sel4_rt::sync::Event::new(),
        })
    }
}

impl Transport for Sel4Transport {
    type Region = DataArea;
    type RawLock = sel4_rt::sync::RawMutex;

    fn call(&self, request: &[u8], response: &mut [u8]) -> Result<usize, Errno> {
        self.server.call_bytes(request, response).map_err(|_| Errno::ServerRestarted)
    }

    fn wait(&self, timeout: Option<Duration>) -> Wake {
        match timeout {
            None => {
                self.wake.wait();
                Wake::Signalled
            }
            Some(limit) => {
                // seL4 5.0 has no timed wait: poll the (sticky) notification until the deadline,
                // giving the core to threads of equal priority in between.
                let deadline = self.now() + limit;
                loop {
                    if self.wake.poll() != 0 {
                        return Wake::Signalled;
                    }
                    if self.now() >= deadline {
                        return Wake::TimedOut;
                    }
                    sel4::syscall::yield_now();
                }
            }
        }
    }

    fn now(&self) -> Duration {
        let mhz = sel4_rt::tsc_mhz().max(1);
        Duration::from_micros(sel4_rt::rdtsc() / mhz)
    }

    fn region(&self) -> &DataArea {
        &self.area
    }

    fn relax(&self) {
        sel4::syscall::yield_now();
    }

    fn park_until(&self, ready: &dyn Fn() -> bool) {
        self.parked.wait_until(ready);
    }

    fn unpark_all(&self) {
        self.parked.notify_all();
    }

    fn timed_wait_polls(&self) -> bool {
        true
    }
}

/// Why a component could not reach the net server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// The system description gives this component no `net`, `net-wake` or `net-data`.
    MissingGrants,
    /// The server refused or did not answer the opening `Hello`.
    Hello(Errno),
}

impl core::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConnectError::MissingGrants => write!(f, "grants `{ENDPOINT}`, `{WAKE}`, `{DATA}` missing"),
            ConnectError::Hello(e) => write!(f, "hello to the net server: {e}"),
        }
    }
}

/// The component's session with the net server: the transport its start-up configuration
/// describes, and the opening `Hello`. Every application starts with this.
pub fn connect() -> Result<alloc::sync::Arc<crate::Client<Sel4Transport>>, ConnectError> {
    let transport = Sel4Transport::from_start_info().ok_or(ConnectError::MissingGrants)?;
    crate::Client::new(transport).map(alloc::sync::Arc::new).map_err(ConnectError::Hello)
}
