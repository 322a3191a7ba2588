//! Clients: who they are, how they are woken, where their data areas are, and the IPC threads
//! that serve their calls.
//!
//! # Naming (the start-up configuration the system description produces)
//!
//! | grant in the net server | what | in the client |
//! |---|---|---|
//! | endpoint `net` (unbadged, receive side) | every client calls it | `net`, badge = the client's id |
//! | notification `client.<id>.wake` (a sending copy, badge 1) | the server signals it when a socket the client waits on changes | `net-wake` (unbadged, waits on it) |
//! | region `client.<id>.data` | the client's data area (`net_api::DataAreaLayout`) | `net-data` |
//!
//! `<id>` is the decimal badge of that client's `net` capability. A client is registered at
//! start for every `client.<id>.wake` grant (its data area is optional: without one, sends and
//! receives get `EFAULT`). A call whose badge is not registered is answered `Error(EPERM)`
//! without reaching the server core; so is a badge-0 call (nobody holds an unbadged copy).

use alloc::sync::Arc;
use alloc::vec::Vec;

use net_api::{encode_response, DataRegion, Errno, Response, MAX_MSG};
use netserver_core::{ClientId, Server};
use sel4::bytes::{unload, MAX_BYTES};
use sel4::{Cap, Endpoint, Notification};
use sel4_rt::println;
use sel4_rt::shared::SharedRegion;
use sel4_rt::sync::RawMutex;

use crate::time::NotificationSignal;

/// A client's data area as the net-api copy code sees it: the region the root task mapped into
/// both the client and this server (volatile, bounds-checked copies; see `SharedRegion`).
pub struct ClientArea(SharedRegion);

impl DataRegion for ClientArea {
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

/// Parses `client.<id>.wake`.
fn client_id(cap_name: &str) -> Option<ClientId> {
    let id = cap_name.strip_prefix("client.")?.strip_suffix(".wake")?;
    let id: ClientId = id.parse().ok()?;
    (id != 0).then_some(id)
}

/// Registers every client the start-up configuration names; returns their ids.
pub fn register_all(server: &Server<RawMutex>) -> Vec<ClientId> {
    let Some(info) = sel4_rt::start_info() else { return Vec::new() };
    let mut ids = Vec::new();
    for cap in &info.caps {
        let Some(id) = client_id(&cap.name) else { continue };
        if register(server, id, Cap::from_cptr(cap.slot)) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids
}

fn register(server: &Server<RawMutex>, id: ClientId, wake: Cap<Notification>) -> bool {
    let name = alloc::format!("client.{id}.data");
    let area = SharedRegion::named(&name).map(|r| Arc::new(ClientArea(r)) as netserver_core::Region);
    let has_area = area.is_some();
    match server.register_client(id, Arc::new(NotificationSignal(wake)), area) {
        Ok(()) => {
            if !has_area {
                println!("client {id}: no data area `{name}` (sends and receives will fail)");
            }
            true
        }
        Err(e) => {
            println!("client {id}: not registered: {e}");
            false
        }
    }
}

/// Death notices from the supervisor (region `client-deaths`, layout
/// `sysdesc::DEATH_NOTICES`): when a client dies (or is being restarted), its sockets are
/// closed — peers get a reset, ports are freed — and it is registered afresh, so a restarted
/// instance starts from nothing.
pub struct DeathNotices {
    region: SharedRegion,
    seen: core::sync::atomic::AtomicU64,
}

impl DeathNotices {
    pub fn from_grants() -> Option<Self> {
        Some(DeathNotices { region: SharedRegion::named("client-deaths")?, seen: core::sync::atomic::AtomicU64::new(0) })
    }

    /// Handles every notice written since the last call (called on every timer tick).
    pub fn reap(&self, server: &Server<RawMutex>) {
        use core::sync::atomic::Ordering::SeqCst;
        let Ok(count) = self.region.atomic_u64(0).map(|w| w.load(SeqCst)) else { return };
        let mut seen = self.seen.load(SeqCst);
        if count.saturating_sub(seen) > sysdesc::DEATH_NOTICES {
            println!("death notices: {} lost", count - seen - sysdesc::DEATH_NOTICES);
            seen = count - sysdesc::DEATH_NOTICES;
        }
        while seen < count {
            let at = 8 * (1 + (seen % sysdesc::DEATH_NOTICES) as usize);
            let badge = self.region.atomic_u64(at).map(|w| w.load(SeqCst)).unwrap_or(0);
            seen += 1;
            let Some(wake) = sel4_rt::cap::<Notification>(&alloc::format!("client.{badge}.wake")) else {
                println!("death notice for unknown client {badge} ignored");
                continue;
            };
            let sockets = server.client_sockets(badge);
            server.close_client(badge);
            register(server, badge, wake);
            println!("client {badge} is gone: {sockets} socket(s) closed, its ports freed");
        }
        self.seen.store(seen, SeqCst);
    }
}

/// An IPC thread: receive a call, answer it, receive the next (`ReplyRecv`). Several run on the
/// same endpoint; each has its own implicit reply capability (non-MCS kernel), so they serve
/// different clients at once. Operations never block on the network (they answer `EAGAIN` and
/// arm the client's wake-up), so a thread is busy only for the duration of one call.
pub fn serve(server: Server<RawMutex>, endpoint: Cap<Endpoint>, registered: &'static [ClientId]) -> ! {
    let mut request = [0u8; MAX_BYTES];
    let mut response = [0u8; MAX_MSG];
    let (mut badge, mut info, mut mr) = endpoint.recv();
    loop {
        let len = match unload(info, mr, &mut request) {
            Err(_) => encode_error(Errno::EBADMSG, &mut response),
            Ok(_) if registered.binary_search(&badge).is_err() => encode_error(Errno::EPERM, &mut response),
            Ok(n) => server.handle(badge, request.get(..n).unwrap_or(&[]), &mut response),
        };
        let reply = response.get(..len).unwrap_or(&[]);
        match endpoint.reply_recv_bytes(reply) {
            Ok((b, i, m)) => (badge, info, mr) = (b, i, m),
            // Cannot happen (replies are at most MAX_MSG bytes); answer nothing and go on.
            Err(_) => (badge, info, mr) = endpoint.recv(),
        }
    }
}

fn encode_error(e: Errno, out: &mut [u8]) -> usize {
    encode_response(&Response::Error(e), out).unwrap_or(0)
}
