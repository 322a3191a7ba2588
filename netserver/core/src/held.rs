//! Held calls: a blocking stream `send` answered once, when its whole buffer is in the socket.
//!
//! Without holding, a blocking `send` that finds the socket's send buffer full is answered
//! `EAGAIN` (or a short count); the client waits for its wake-up and calls again — two or more
//! round trips per data-area slot against a slow peer. A transport that can *defer* a reply (on
//! seL4: save the caller's reply capability with `SaveCaller`, answer through it later) instead
//! lets the server keep the call:
//!
//! 1. [`Server::handle_holding`] runs the request as [`Server::handle`] does. A `Send` on a
//!    stream socket that carries [`MsgFlags::HOLD`] (libsock sets it on blocking sends) and
//!    could not take all its bytes comes back as [`Answer::Hold`]: a [`HeldSend`] that records
//!    the client's registration, the socket itself (not its handle: a handle can be reused after
//!    a close), the descriptor and how many bytes were taken. Its wake-up is armed with the
//!    *holder's* signal ([`WaitSlot::arm_held`](crate::wake::WaitSlot::arm_held)), beside the
//!    client's own waiter.
//! 2. The holder (the IPC thread) keeps serving other clients. When its signal fires it calls
//!    [`Server::resume`] on each call it holds; `resume` moves more bytes from the client's data
//!    area into the socket and either re-arms (`None`) or writes the final answer (`Some(len)`):
//!    `Sent { len }` with the whole buffer, or — on an error — the bytes taken so far, or the
//!    error if none were.
//! 3. Closing the socket (by the client, another of its threads, or [`Server::close_client`]
//!    when the client died) signals every holder ([`crate::wake::WaitSlot::release_held`]), so a
//!    held call always ends; the holder must then forget it (on seL4 the dead caller's reply
//!    capability is already gone, and answering a missing one is harmless).
//!
//! Nothing here blocks: a held call costs the server a `HeldSend` (the holder's memory) and one
//! waiter entry on the socket, no thread.

use alloc::sync::Arc;

use net_api::{codec, BufDesc, Errno, MsgFlags, Request, Response, SockAddr, SockType};

use crate::lock::RawLock;
use crate::server::{Client, ClientId, Server};
use crate::socket::Socket;
use crate::wake::{Signal, OUT};

/// The answer to one call from [`Server::handle_holding`].
pub enum Answer<R: RawLock> {
    /// Reply now with the first `usize` bytes of the response buffer.
    Reply(usize),
    /// Keep the call: answer it when [`Server::resume`] returns `Some`.
    Hold(HeldSend<R>),
}

/// A blocking stream send the server has not answered yet (see the module docs).
pub struct HeldSend<R: RawLock> {
    client_id: ClientId,
    client: Arc<Client<R>>,
    sock: Arc<Socket<R>>,
    buf: BufDesc,
    to: Option<SockAddr>,
    taken: usize,
}

impl<R: RawLock> HeldSend<R> {
    /// The client the call came from.
    pub fn client(&self) -> ClientId {
        self.client_id
    }
    /// Bytes of the buffer already in the socket.
    pub fn taken(&self) -> usize {
        self.taken
    }
}

enum Step {
    Done(Response),
    Wait,
}

impl<R: RawLock> Server<R> {
    /// [`Server::handle`] for a transport that can defer replies: a blocking stream send
    /// ([`MsgFlags::HOLD`]) that cannot complete now is held instead of answered, if `may_hold`
    /// (the transport has room to keep one more call). `holder` is signalled when a held call
    /// may progress; it must be the same signal for every call one thread holds.
    pub fn handle_holding(
        &self,
        client: ClientId,
        request: &[u8],
        response: &mut [u8],
        holder: &Arc<dyn Signal>,
        may_hold: bool,
    ) -> Answer<R> {
        // Decoded once here (a malformed request takes `handle`'s path: counted, `EBADMSG`).
        let Ok((epoch, req)) = codec::decode_request(request) else {
            return Answer::Reply(self.handle(client, request, response));
        };
        if let Request::Send { handle, buf, flags, to } = req {
            if may_hold
                && flags.contains(MsgFlags::HOLD)
                && !flags.contains(MsgFlags::DONTWAIT)
                && flags.is_known()
                && epoch == self.inner.cfg.epoch
            {
                if let Some(answer) = self.try_hold(client, handle, buf, to, response, holder) {
                    return answer;
                }
            }
        }
        Answer::Reply(encode(&self.dispatch(client, epoch, req), response))
    }

    /// `None`: not a case for holding (not a stream socket, bad handle or descriptor): the
    /// ordinary path answers it.
    fn try_hold(
        &self,
        c: ClientId,
        handle: net_api::SocketHandle,
        buf: BufDesc,
        to: Option<SockAddr>,
        response: &mut [u8],
        holder: &Arc<dyn Signal>,
    ) -> Option<Answer<R>> {
        let (client, sock) = self.lookup(c, handle).ok()?;
        if sock.ty != SockType::Stream {
            return None;
        }
        client.area.as_ref()?.layout().check_tx(buf).ok()?;
        let mut held = HeldSend { client_id: c, client, sock, buf, to, taken: 0 };
        Some(match self.step(&mut held, holder) {
            Step::Done(r) => Answer::Reply(encode(&r, response)),
            Step::Wait => Answer::Hold(held),
        })
    }

    /// Moves more of a held send into its socket. `Some(len)`: the call is finished and its
    /// answer is the first `len` bytes of `response`; `None`: still waiting (re-armed on
    /// `holder`).
    pub fn resume(&self, held: &mut HeldSend<R>, response: &mut [u8], holder: &Arc<dyn Signal>) -> Option<usize> {
        match self.step(held, holder) {
            Step::Done(r) => Some(encode(&r, response)),
            Step::Wait => None,
        }
    }

    /// Answers a held call now, for a transport that cannot keep it after all (say, saving the
    /// caller's reply capability failed): `Sent` with the bytes taken so far, or — none taken —
    /// `EAGAIN` with the *client's* wake-up armed, as an ordinary blocking send gets it. Returns
    /// the answer's length in `response`.
    pub fn give_back(&self, held: HeldSend<R>, response: &mut [u8]) -> usize {
        if held.taken > 0 {
            return encode(&Response::Sent { len: held.taken as u32 }, response);
        }
        if held.sock.wake.arm(OUT, &held.client.signal) != 0 {
            held.client.signal.signal();
        }
        encode(&Response::Error(Errno::EAGAIN), response)
    }

    fn step(&self, held: &mut HeldSend<R>, holder: &Arc<dyn Signal>) -> Step {
        let len = held.buf.len as usize;
        loop {
            if held.taken >= len {
                return Step::Done(Response::Sent { len: held.taken as u32 });
            }
            let Some(area) = held.client.area.as_ref() else {
                return Step::Done(Response::Error(Errno::EFAULT));
            };
            let r = {
                let _big = self.inner.big_lock();
                self.inner.stats.inc(Self::hint(held.client_id), crate::stats::Counter::requests);
                let (buf, skip) = (held.buf, held.taken);
                self.send_stream(&held.sock, len - skip, held.to, &mut |at, out| area.read_tx(buf, skip + at, out))
            };
            match r {
                Ok(n) => held.taken += n,
                Err(Errno::EAGAIN) => {
                    // Arm, then re-check (the protocol of `wake`): ready now means try again.
                    if held.sock.wake.arm_held(OUT, holder) == 0 {
                        return Step::Wait;
                    }
                }
                Err(e) if held.taken == 0 => return Step::Done(Response::Error(e)),
                // Bytes already taken are reported; the error shows on the next call.
                Err(_) => return Step::Done(Response::Sent { len: held.taken as u32 }),
            }
        }
    }
}

fn encode(r: &Response, out: &mut [u8]) -> usize {
    codec::encode_response(r, out)
        .or_else(|_| codec::encode_response(&Response::Error(Errno::EMSGSIZE), out))
        .unwrap_or(0)
}
