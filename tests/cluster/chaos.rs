//! A TCP proxy in front of a NATS server that cuts its connections at random moments: what a
//! flaky network does to a writer. A publish written just before a cut is lost or lands after
//! the reconnect, an acknowledgement on its way back is lost, and the client reconnects and
//! sends what it buffered meanwhile, so publishes fail and are retried for real, at random
//! points, without any hook in the code under test.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runledger::workload::Rng;

pub struct ChaosProxy {
    pub port: u16,
    /// Connections cut so far.
    pub cuts: Arc<AtomicU64>,
    cutting: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl ChaosProxy {
    /// A proxy to `127.0.0.1:upstream` that, while cutting, closes one of its live connections
    /// every `every` on average (uniformly between 0.2 and 1.8 times it).
    pub fn start(upstream: u16, every: Duration, seed: u64) -> ChaosProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let cutting = Arc::new(AtomicBool::new(true));
        let cuts = Arc::new(AtomicU64::new(0));
        {
            let live = live.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    {
                        let mut live = live.lock().unwrap();
                        live.retain(|s| s.peer_addr().is_ok());
                        live.push(client.try_clone().unwrap());
                        live.push(server.try_clone().unwrap());
                    }
                    pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                    pump(server, client);
                }
            });
        }
        {
            let (stop, cutting, cuts) = (stop.clone(), cutting.clone(), cuts.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed);
                while !stop.load(Ordering::Acquire) {
                    let pause = every.mul_f64(0.2 + 1.6 * rng.unit());
                    std::thread::sleep(pause);
                    if !cutting.load(Ordering::Acquire) {
                        continue;
                    }
                    let mut live = live.lock().unwrap();
                    if live.is_empty() {
                        continue;
                    }
                    let victim = rng.below(live.len() as u64) as usize;
                    let _ = live[victim].shutdown(Shutdown::Both);
                    live.remove(victim);
                    cuts.fetch_add(1, Ordering::AcqRel);
                }
            });
        }
        ChaosProxy {
            port,
            cuts,
            cutting,
            stop,
        }
    }

    /// The proxy's URL, with the `node` user's login.
    pub fn url(&self) -> String {
        format!("nats://{}@127.0.0.1:{}", crate::nats::NODE_LOGIN, self.port)
    }

    /// Stops (or resumes) cutting connections; the proxy keeps forwarding.
    pub fn set_cutting(&self, on: bool) {
        self.cutting.store(on, Ordering::Release);
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept loop so it sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to` until either side closes, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}
