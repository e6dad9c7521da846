//! A read-only TFTP server (RFC 1350 with RFC 2347/2348/2349 options) for provisioning files.
//!
//! * [`packet`] — pure: the packet codec and netascii.
//! * [`transfer`] — pure: one transfer's state machine.
//! * the shell below: requests arrive on the listening socket; each transfer runs from its own
//!   socket on an ephemeral port (the server's transfer ID, as RFC 1350 says), so a reply never
//!   comes from port 69 — which is also why TFTP does not work through NAT or a Service
//!   (docs/provisioning.md).

pub mod packet;
pub mod transfer;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, watch};

use self::packet::{ErrorCode, Packet, Request};
use self::transfer::{Limits, Step, Transfer};
use super::ProvisionError;
use super::access::{self, Access, FileOwner};
use super::fetch::{Fetch, FetchResult, Protocol};
use super::store::ProvisionStore;

/// Transfers in flight at most; more requests are told to retry.
const MAX_TRANSFERS: usize = 1024;
/// Receive buffer asked for the listening socket: a building's phones booting after a power cut
/// send their requests within milliseconds, more than the kernel's default buffer (≈200 KiB of
/// small datagrams) holds. The kernel caps it at `net.core.rmem_max`.
const LISTEN_BUFFER: usize = 4 << 20;

/// The listening socket, with a receive buffer for a boot storm.
fn listen_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(LISTEN_BUFFER) {
        tracing::warn!(error = %e, "TFTP: cannot enlarge the receive buffer; requests of a boot storm may need a retry");
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// The running server.
pub struct TftpServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The request loop.
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds `listen` and serves `store`'s files until `stop` turns true.
pub async fn start(
    listen: SocketAddr,
    store: Arc<ProvisionStore>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> Result<TftpServer, ProvisionError> {
    let bind = |source| ProvisionError::Bind { what: "TFTP", addr: listen, source };
    let socket = listen_socket(listen).map_err(bind)?;
    let addr = socket.local_addr().map_err(bind)?;
    let slots = Arc::new(Semaphore::new(MAX_TRANSFERS));
    let task = tokio::spawn(async move {
        // A request fits easily: a name, a mode and a few options.
        let mut buf = vec![0u8; 2048];
        loop {
            let (len, peer) = tokio::select! {
                r = socket.recv_from(&mut buf) => match r {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "TFTP receive failed");
                        continue;
                    }
                },
                _ = super::until_stopped(&mut stop) => return,
            };
            // Requests only: anything else sent to the listening port is not for a transfer.
            let request = match packet::decode(&buf[..len]) {
                Ok(Packet::Rrq(r)) => Ok(r),
                Ok(Packet::Wrq(r)) => Err((r.filename, ErrorCode::AccessViolation, "read-only server")),
                _ => continue,
            };
            let store = store.clone();
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tokio::spawn(reply_error(addr.ip(), peer, ErrorCode::NotDefined, "server busy, try again"));
                continue;
            };
            tokio::spawn(async move {
                match request {
                    Ok(r) => serve(r, addr.ip(), peer, &store, &limits).await,
                    Err((name, code, message)) => {
                        tracing::info!(file = %name, source = %peer, "TFTP write request refused");
                        reply_error(addr.ip(), peer, code, message).await;
                    }
                }
                drop(slot);
            });
        }
    });
    Ok(TftpServer { addr, task })
}

/// A socket for one transfer: an ephemeral port on the address the request came to (all
/// addresses when the server listens on all).
async fn transfer_socket(local: IpAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(SocketAddr::new(local, 0)).await
}

async fn reply_error(local: IpAddr, peer: SocketAddr, code: ErrorCode, message: &str) {
    let bytes = Packet::Error { code, message: message.to_owned() }.encode();
    match transfer_socket(local).await {
        Ok(socket) => {
            let _ = socket.send_to(&bytes, peer).await;
        }
        Err(e) => tracing::warn!(error = %e, "TFTP: no socket for an error reply"),
    }
}

async fn serve(request: Request, local: IpAddr, peer: SocketAddr, store: &ProvisionStore, limits: &Limits) {
    let served = store.served();
    let file = served.lookup(&request.filename);
    let owner = file.map(|f| FileOwner { phone: f.phone.as_deref() });
    let mut fetch = Fetch {
        file: &request.filename,
        phone: file.and_then(|f| f.phone.as_deref()),
        vendor: file.map_or("unknown", |f| f.vendor),
        source: peer,
        user_agent: None,
        protocol: Protocol::Tftp,
        result: FetchResult::Ok,
    };
    let file = match access::tftp(owner, peer.ip(), served.networks()) {
        Access::Serve => file.expect("served files exist"),
        refused => {
            let (code, message, result) = match refused {
                Access::Forbidden => (ErrorCode::AccessViolation, "access violation", FetchResult::Forbidden),
                _ => (ErrorCode::FileNotFound, "file not found", FetchResult::NotFound),
            };
            fetch.result = result;
            store.record(&fetch);
            reply_error(local, peer, code, message).await;
            return;
        }
    };
    fetch.result = match run(&request, file.contents.clone(), local, peer, limits).await {
        Ok(()) => FetchResult::Ok,
        Err(why) => {
            tracing::info!(file = %file.name, source = %peer, reason = %why, "TFTP transfer failed");
            FetchResult::Failed
        }
    };
    store.record(&fetch);
}

/// Runs one transfer to its end.
async fn run(
    request: &Request,
    contents: Arc<[u8]>,
    local: IpAddr,
    peer: SocketAddr,
    limits: &Limits,
) -> Result<(), String> {
    let socket = transfer_socket(local).await.map_err(|e| format!("no transfer socket: {e}"))?;
    let (mut transfer, first) = match Transfer::start(request, contents, limits) {
        Ok(started) => started,
        Err(error) => {
            let _ = socket.send_to(&error, peer).await;
            return Err("refused mode".into());
        }
    };
    socket.send_to(&first, peer).await.map_err(|e| e.to_string())?;
    // Clients send ACKs and ERRORs here: small datagrams (a longer one is cut, and is no ACK).
    let mut buf = vec![0u8; 1024];
    // Only a packet that moves the transfer on restarts the clock: a client repeating itself
    // cannot hold off the retransmission.
    let mut deadline = tokio::time::Instant::now() + transfer.timeout();
    loop {
        let step = match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
            Err(_) => transfer.on_timeout(),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok((len, from))) if from == peer => transfer.on_packet(&buf[..len]),
            Ok(Ok((_, stranger))) => {
                // RFC 1350: a packet from another transfer ID gets error 5; ours goes on.
                let error = Packet::Error {
                    code: ErrorCode::UnknownTransferId,
                    message: "unknown transfer ID".into(),
                };
                let _ = socket.send_to(&error.encode(), stranger).await;
                continue;
            }
        };
        match step {
            Step::Send(bytes) => {
                socket.send_to(&bytes, peer).await.map_err(|e| e.to_string())?;
                deadline = tokio::time::Instant::now() + transfer.timeout();
            }
            Step::Wait => {}
            Step::Finished => return Ok(()),
            Step::Failed(why) => return Err(why),
        }
    }
}
