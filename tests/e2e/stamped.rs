//! A TCP front for the mock upstream that times each request by the
//! kernel's receive stamp (`SO_TIMESTAMPNS`), not by when the test's
//! runtime gets to it.
//!
//! On loopback the kernel stamps a segment as the sender's write hands it
//! over, so the stamps are the relay's send times: a stall of the test
//! process, which would bunch its own clock readings, moves none of them.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};

pub struct Stamped {
    pub url: String,
    /// One per request: when its first byte reached us (since the Unix
    /// epoch), None when the kernel gave no stamp.
    stamps: Arc<Mutex<Vec<Option<Duration>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stamped {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stamped {
    /// Listen on a port of its own and pass everything on to `upstream`
    /// (`http://host:port`).
    pub async fn front(upstream: &str) -> Self {
        let target = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        // Set on the listener, so every accepted connection has it from
        // its first segment on.
        enable_stamps(listener.as_raw_fd()).expect("SO_TIMESTAMPNS");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stamps = Arc::new(Mutex::new(Vec::new()));
        let kept = stamps.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (target, stamps) = (target.clone(), kept.clone());
                tokio::spawn(async move {
                    let _ = pipe(conn, &target, &stamps).await;
                });
            }
        });
        Self { url, stamps, task }
    }

    /// Every request's stamp, in order; panics if the kernel left one unstamped.
    pub fn stamps(&self) -> Vec<Duration> {
        let stamps = self.stamps.lock().unwrap().clone();
        let mut all: Vec<Duration> = stamps
            .iter()
            .map(|s| s.expect("the kernel stamps every segment"))
            .collect();
        all.sort();
        all
    }
}

fn enable_stamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and an int-sized option value.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Read what is queued, with the stamp of the segment it came in.
fn recv_stamped(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<Duration>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; every pointer in it outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: as above; MSG_DONTWAIT, as tokio's readiness expects.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, stamp))
}

/// Write all of `bytes` to a stream shared by reference.
async fn send_all(s: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        s.writable().await?;
        match s.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Pass one connection through, noting a stamp where each request begins.
/// A poll is a GET with no body: its head ends the request.
async fn pipe(
    conn: TcpStream,
    target: &str,
    stamps: &Mutex<Vec<Option<Duration>>>,
) -> io::Result<()> {
    let up = TcpStream::connect(target).await?;
    let fd = conn.as_raw_fd();
    let (mut from_relay, mut from_up) = (vec![0u8; 16 * 1024], vec![0u8; 64 * 1024]);
    let mut head: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            ready = conn.readable() => {
                ready?;
                let (n, stamp) = match conn.try_io(Interest::READABLE, || recv_stamped(fd, &mut from_relay)) {
                    Ok(read) => read,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                };
                if n == 0 {
                    return Ok(());
                }
                for &b in &from_relay[..n] {
                    if head.is_empty() {
                        stamps.lock().unwrap().push(stamp);
                    }
                    head.push(b);
                    if head.ends_with(b"\r\n\r\n") {
                        head.clear();
                    }
                }
                send_all(&up, &from_relay[..n]).await?;
            }
            ready = up.readable() => {
                ready?;
                let n = match up.try_read(&mut from_up) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                };
                if n == 0 {
                    return Ok(());
                }
                send_all(&conn, &from_up[..n]).await?;
            }
        }
    }
}
