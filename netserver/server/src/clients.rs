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
use netserver_core::held::{Answer, HeldSend};
use netserver_core::wake::Signal;
use netserver_core::{ClientId, Server};
use sel4::bytes::{unload, MAX_BYTES};
use sel4::{CNode, Cap, Endpoint, MessageInfo, Notification};
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
    (id != 0 && id < HELD_BADGE).then_some(id)
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

/// Bit of the badge that marks a signal on an IPC thread's bound notification (held calls may
/// progress) rather than a client's call; client ids stay below it.
pub const HELD_BADGE: u64 = 1 << 27;

/// How an IPC thread keeps calls it answers later (blocking sends held until their bytes are in
/// the socket, see `netserver_core::held`): its bound notification's signalling side, and the
/// empty CNode slots it saves callers' reply capabilities in.
pub struct Holding {
    pub signal: Arc<dyn Signal>,
    pub cnode: Cap<CNode>,
    pub slots: core::ops::Range<u64>,
}

/// Most calls one IPC thread holds at once (each takes a CNode slot for its reply capability);
/// when all are taken, blocking sends are answered the old way (`EAGAIN`, client retries).
pub const HELD_PER_THREAD: u64 = 64;

/// What IPC thread `i` needs to hold calls: notification `ipc.<i>` bound to its TCB, the
/// sending copy `ipc.<i>.signal` (badge [`HELD_BADGE`]), and `slots`. `None` (calls are never
/// held) when the description grants no such notification or there are no slots.
pub fn holding(info: &sel4_rt::StartInfo, i: usize, slots: core::ops::Range<u64>) -> Option<Holding> {
    let wait = sel4_rt::cap::<Notification>(&alloc::format!("ipc.{i}"))?;
    let signal = sel4_rt::cap::<Notification>(&alloc::format!("ipc.{i}.signal"))?;
    let tcb: Cap<sel4::Tcb> = Cap::from_cptr(info.thread(&alloc::format!("ipc{i}"))?.tcb);
    if slots.is_empty() {
        return None;
    }
    if let Err(e) = tcb.bind_notification(wait.upcast()) {
        println!("ipc{i}: cannot bind notification `ipc.{i}` ({e:?}); blocking sends are not held");
        return None;
    }
    Some(Holding { signal: Arc::new(NotificationSignal(signal)), cnode: Cap::from_cptr(info.cnode), slots })
}

/// An IPC thread: receive a call, answer it, receive the next (`ReplyRecv`). One runs per core,
/// each on its own endpoint (`net.<n>`; clients are given the one of their core), so a call
/// and its answer stay on one core. Operations never block on the network: they answer
/// `EAGAIN` and arm the client's wake-up, so a thread is busy only for the duration of one call
/// — except a blocking stream send, which with `holding` is *held*: the caller's reply
/// capability is saved (`SaveCaller`) into a free slot, and the thread goes on serving others;
/// its bound notification (badge [`HELD_BADGE`]) tells it when a held send may progress, and
/// the answer goes through the saved capability once all the bytes are in the socket (one round
/// trip per data-area slot however slow the peer). A caller that dies meanwhile loses its reply
/// capability (the kernel deletes it); its sockets are closed by the death notice, which ends
/// the held call, and the answer to the missing capability is dropped (`NBSend`).
pub fn serve(
    server: Server<RawMutex>,
    endpoint: Cap<Endpoint>,
    registered: &'static [ClientId],
    holding: Option<Holding>,
) -> ! {
    let mut request = [0u8; MAX_BYTES];
    let mut response = [0u8; MAX_MSG];
    let mut held: Vec<(u64, HeldSend<RawMutex>)> = Vec::new();
    let mut free: Vec<u64> = holding.as_ref().map(|h| h.slots.clone().rev().collect()).unwrap_or_default();
    let (mut badge, mut info, mut mr) = endpoint.recv();
    loop {
        if badge & HELD_BADGE != 0 {
            if let Some(h) = &holding {
                let mut i = 0;
                while i < held.len() {
                    let Some((slot, call)) = held.get_mut(i) else { break };
                    match server.resume(call, &mut response, &h.signal) {
                        None => i += 1,
                        Some(len) => {
                            let slot = *slot;
                            answer_saved(slot, response.get(..len).unwrap_or(&[]));
                            let _ = h.cnode.delete(slot, 64);
                            free.push(slot);
                            held.swap_remove(i);
                        }
                    }
                }
            }
            (badge, info, mr) = endpoint.recv();
            continue;
        }
        let answer = match unload(info, mr, &mut request) {
            Err(_) => Answer::Reply(encode_error(Errno::EBADMSG, &mut response)),
            Ok(_) if registered.binary_search(&badge).is_err() => Answer::Reply(encode_error(Errno::EPERM, &mut response)),
            Ok(n) => {
                let req = request.get(..n).unwrap_or(&[]);
                match &holding {
                    Some(h) => server.handle_holding(badge, req, &mut response, &h.signal, !free.is_empty()),
                    None => Answer::Reply(server.handle(badge, req, &mut response)),
                }
            }
        };
        match answer {
            Answer::Reply(len) => {
                let reply = response.get(..len).unwrap_or(&[]);
                match endpoint.reply_recv_bytes(reply) {
                    Ok((b, i, m)) => (badge, info, mr) = (b, i, m),
                    // Cannot happen (replies are at most MAX_MSG bytes); answer nothing and go on.
                    Err(_) => (badge, info, mr) = endpoint.recv(),
                }
            }
            Answer::Hold(call) => {
                // `may_hold` was true only with `holding` and a free slot.
                let saved = match (&holding, free.pop()) {
                    (Some(h), Some(slot)) => match h.cnode.save_caller(slot, 64) {
                        Ok(()) => Ok(slot),
                        Err(e) => {
                            free.push(slot);
                            Err(e)
                        }
                    },
                    _ => Err(sel4::Error::NotEnoughMemory),
                };
                match saved {
                    Ok(slot) => {
                        held.push((slot, call));
                        (badge, info, mr) = endpoint.recv();
                    }
                    Err(e) => {
                        // Answer now, as without holding (the implicit reply capability is
                        // still there).
                        println!("client {}: cannot hold its send ({e:?}); answered at once", call.client());
                        let len = server.give_back(call, &mut response);
                        match endpoint.reply_recv_bytes(response.get(..len).unwrap_or(&[])) {
                            Ok((b, i, m)) => (badge, info, mr) = (b, i, m),
                            Err(_) => (badge, info, mr) = endpoint.recv(),
                        }
                    }
                }
            }
        }
    }
}

/// Answers a held call through its saved reply capability. `NBSend`: if the caller died, the
/// kernel deleted the capability and this does nothing (a blocking `Send` would fault).
fn answer_saved(slot: u64, bytes: &[u8]) {
    let words = sel4::ipc_buffer::write_bytes(0, bytes, false);
    let info = MessageInfo::new(bytes.len() as u64, 0, 0, words as u64);
    let mr = [sel4::ipc_buffer::mr(0), sel4::ipc_buffer::mr(1), sel4::ipc_buffer::mr(2), sel4::ipc_buffer::mr(3)];
    Cap::<Endpoint>::from_cptr(slot).nb_send(info, mr);
}

fn encode_error(e: Errno, out: &mut [u8]) -> usize {
    encode_response(&Response::Error(e), out).unwrap_or(0)
}
