//! The dispatcher: net-api requests in, responses out.
//!
//! [`Server::handle`] is the net server's only entry point for client requests. It decodes with
//! `net_api::codec` (a malformed request gets `Error(EBADMSG)`; nothing here panics on client
//! input), checks the session epoch, executes the request on behalf of the client the transport
//! identified, moves bulk data through that client's data area (checking every descriptor against
//! the server's own copy of the layout), and encodes the response.
//!
//! Whenever the answer is `EAGAIN` (or `EINPROGRESS`), the dispatcher arms the client's wake-up
//! on that socket for the readiness the client is waiting for, then re-checks; if the socket
//! became ready in between it signals the client at once. See [`crate::wake`] for why no wake-up
//! is lost.

use net_api::{codec, Errno, PollEvents, PollReady, Request, Response, ServerInfo, PROTOCOL_VERSION};

use crate::lock::RawLock;
use crate::server::{ClientId, Server};
use crate::stats::Counter;
use crate::wake::{IN, OUT};

impl<R: RawLock> Server<R> {
    /// Handles one encoded request from `client` and writes the encoded response into `response`
    /// (at least [`net_api::MAX_MSG`] bytes). Returns the response length.
    pub fn handle(&self, client: ClientId, request: &[u8], response: &mut [u8]) -> usize {
        let mut malformed = true;
        let n = codec::serve(request, response, |epoch, req| {
            malformed = false;
            self.dispatch(client, epoch, req)
        });
        if malformed {
            self.inner.stats.inc(client as usize, Counter::malformed_requests);
        }
        n
    }

    /// Executes one decoded request.
    pub fn dispatch(&self, c: ClientId, epoch: u32, req: Request) -> Response {
        if let Request::Hello { version } = req {
            if version != PROTOCOL_VERSION {
                return Response::Error(Errno::EPROTONOSUPPORT);
            }
            return Response::Hello(ServerInfo {
                version: PROTOCOL_VERSION,
                epoch: self.inner.cfg.epoch,
                layout: self.inner.cfg.layout,
            });
        }
        if epoch != self.inner.cfg.epoch {
            return Response::Error(Errno::ServerRestarted);
        }
        match self.execute(c, req) {
            Ok(r) => r,
            Err(e) => Response::Error(e),
        }
    }

    fn execute(&self, c: ClientId, req: Request) -> Result<Response, Errno> {
        match req {
            Request::Hello { .. } => Err(Errno::EINVAL),
            Request::Socket { domain, ty } => self.socket(c, domain, ty).map(Response::Socket),
            Request::Bind { handle, addr } => self.bind(c, handle, addr).map(|()| Response::Ok),
            Request::Listen { handle, backlog } => self.listen(c, handle, backlog).map(|()| Response::Ok),
            Request::Accept { handle } => match self.accept(c, handle) {
                Ok((handle, peer)) => Ok(Response::Accepted { handle, peer }),
                Err(Errno::EAGAIN) => {
                    self.arm(c, handle, IN);
                    Err(Errno::EAGAIN)
                }
                Err(e) => Err(e),
            },
            Request::Connect { handle, addr } => match self.connect(c, handle, addr) {
                Err(e @ (Errno::EINPROGRESS | Errno::EALREADY | Errno::EAGAIN)) => {
                    self.arm(c, handle, OUT);
                    Err(e)
                }
                other => other.map(|()| Response::Ok),
            },
            Request::Send { handle, buf, flags, to } => {
                if !flags.is_known() || flags.contains(net_api::MsgFlags::PEEK) {
                    return Err(Errno::EINVAL);
                }
                let client = self.client_area(c)?;
                let area = client.area.as_ref().ok_or(Errno::EFAULT)?;
                area.layout().check_tx(buf)?;
                let r = self.send_with(c, handle, buf.len as usize, to, &mut |skip, out| area.read_tx(buf, skip, out));
                match r {
                    Ok(n) => Ok(Response::Sent { len: n as u32 }),
                    Err(Errno::EAGAIN) => {
                        self.arm(c, handle, OUT);
                        Err(Errno::EAGAIN)
                    }
                    Err(e) => Err(e),
                }
            }
            Request::Recv { handle, buf, flags } => {
                if !flags.is_known() {
                    return Err(Errno::EINVAL);
                }
                let client = self.client_area(c)?;
                let area = client.area.as_ref().ok_or(Errno::EFAULT)?;
                area.layout().check_rx(buf)?;
                let peek = flags.contains(net_api::MsgFlags::PEEK);
                let r = self.recv_with(c, handle, buf.len as usize, peek, &mut |at, data| area.write_rx(buf, at, data));
                match r {
                    Ok((n, from)) => Ok(Response::Received { len: n as u32, from }),
                    Err(Errno::EAGAIN) => {
                        self.arm(c, handle, IN);
                        Err(Errno::EAGAIN)
                    }
                    Err(e) => Err(e),
                }
            }
            Request::Shutdown { handle, how } => self.shutdown(c, handle, how).map(|()| Response::Ok),
            Request::Close { handle } => self.close(c, handle).map(|()| Response::Ok),
            Request::GetSockName { handle } => self.local_addr(c, handle).map(Response::Addr),
            Request::GetPeerName { handle } => self.peer_addr(c, handle).map(Response::Addr),
            Request::SetSockOpt { handle, value } => self.set_option(c, handle, value).map(|()| Response::Ok),
            Request::GetSockOpt { handle, opt } => self.get_option(c, handle, opt).map(Response::SockOpt),
            Request::WakeAfter { micros } => self.wake_after(c, micros).map(|()| Response::Ok),
            Request::Stats => {
                self.client_area(c)?;
                Ok(Response::Stats(alloc::boxed::Box::new(self.net_stats())))
            }
            Request::Poll { fds } => {
                let mut out = [PollEvents::NONE; net_api::MAX_POLL_FDS];
                let n = fds.len().min(out.len());
                self.poll(c, fds.as_slice(), &mut out[..n], true)?;
                let revents = PollReady::from_slice(out.get(..n).unwrap_or(&[])).ok_or(Errno::EINVAL)?;
                Ok(Response::Poll { revents: alloc::boxed::Box::new(revents) })
            }
        }
    }
}
