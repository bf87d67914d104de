//! `neurodex serve`: the Deep Visualization Toolbox's live view in a browser. One page
//! (static files compiled into the binary, no build step) sends frames from the webcam,
//! a video file, an uploaded picture or an indexed image; the server runs the network
//! once per frame and answers the selected layer's maps and the top-5 classes. A click
//! on a channel asks the index for that unit's top images and, where the index holds
//! labels, its best concepts; the page can also go to the best unit of a concept
//! (`concepts`, scored once per server, from startup on).
//!
//! One inference runs at a time: a frame that arrives while the network is busy is
//! answered "busy" at once and dropped, never queued, so the page (which keeps one
//! frame in flight) always gets the freshest picture through.
//!
//! Safe by default: binds to localhost; serves only files the database indexed, by id;
//! limits the size of uploads and the pixel count of frames.

pub mod concepts;
pub mod frame;
mod guard;
mod handlers;
pub mod unit;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::model::Network;
use crate::store::Store;
use crate::{Error, Result};

pub use guard::HostRules;
pub use handlers::router;

/// A client has this long to send each request's head; it is also how long an idle
/// keep-alive connection stays open (hyper times the wait for the next head).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a request may take once its head is in (a frame, a unit's report).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a unit report waits for its turn before it is answered 503 busy.
pub const REPORT_WAIT: Duration = Duration::from_millis(500);

/// Default largest request body (an uploaded picture or a frame).
pub const DEFAULT_MAX_UPLOAD: usize = 16 << 20;
/// Default largest frame, in pixels (checked from the image header).
pub const DEFAULT_MAX_FRAME_PIXELS: u64 = 40_000_000;

/// A layer the page may show.
#[derive(Clone, Debug, Serialize)]
pub struct LayerEntry {
    pub name: String,
    pub node: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Receptive field side, in network-input pixels.
    pub field: [i64; 2],
    /// Whether the database has this layer's top images.
    pub indexed: bool,
}

/// Everything the handlers share.
pub struct App {
    pub net: Network,
    pub db: Option<PathBuf>,
    pub layers: Vec<LayerEntry>,
    /// The layer the page opens on: the middle tap.
    pub default_layer: String,
    pub max_upload: usize,
    pub max_frame_pixels: u64,
    /// The names requests may give as `Host` (see `guard`).
    pub hosts: HostRules,
    /// Connections served at once; more wait in the listen queue. `None`: from the
    /// descriptor limit.
    pub max_connections: Option<usize>,
    /// Set while an inference runs.
    busy: AtomicBool,
    /// Unit reports run one at a time (each runs the network on 9 images): beside
    /// one frame, that keeps two cores' worth of work and its memory bounded.
    pub reports: tokio::sync::Semaphore,
    /// The index's units scored against its labels: set once, by the first request
    /// that needs it or by `serve` at startup.
    concepts: tokio::sync::OnceCell<Arc<concepts::Concepts>>,
}

/// The right to run the network, held by at most one frame; released on drop.
pub struct Slot(Arc<App>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

impl App {
    /// Wraps `net`; with `db`, checks that the database was built with the same
    /// architecture and marks which layers it indexes.
    pub fn new(mut net: Network, db: Option<PathBuf>) -> Result<App> {
        let mut indexed = Vec::new();
        if let Some(db) = &db {
            let store = Store::open_readonly(db)?;
            let run = store.run_info()?;
            if run.model != net.arch.name {
                return Err(Error::Store {
                    path: db.to_path_buf(),
                    reason: format!(
                        "the database indexes {}, not {} (drop --model, or pass the same one)",
                        run.model, net.arch.name
                    ),
                });
            }
            indexed = store.layers()?.into_iter().map(|l| l.node).collect();
        }
        // Every tap can be differentiated before its activation (the projection pane
        // follows a unit's ranking value, which a saturated ReLU6 does not cut).
        let taps = net.arch.taps();
        net.split_activations(&taps);
        let shapes = net.arch.output_shapes();
        let fields = crate::receptive::fields(&net.arch);
        let layers: Vec<LayerEntry> = net
            .arch
            .taps()
            .into_iter()
            .map(|i| LayerEntry {
                name: net.arch.nodes[i].name.clone(),
                node: i,
                c: shapes[i][0],
                h: shapes[i][1],
                w: shapes[i][2],
                field: fields[i].size,
                indexed: indexed.contains(&i),
            })
            .collect();
        // The middle of the model's default layers that have maps (else of all
        // spatial taps): a mid-level grid, as the toolbox opens on.
        let spatial = |names: &mut dyn Iterator<Item = usize>| -> Vec<&LayerEntry> {
            names
                .filter_map(|n| layers.iter().find(|l| l.node == n))
                .filter(|l| l.h * l.w > 1)
                .collect()
        };
        let mut spatial = spatial(
            &mut net
                .arch
                .default_layers
                .iter()
                .filter_map(|n| net.arch.find(n)),
        );
        if spatial.is_empty() {
            spatial = layers.iter().filter(|l| l.h * l.w > 1).collect();
        }
        let default_layer = spatial
            .get(spatial.len() / 2)
            .or(layers.first().as_ref())
            .map(|l| l.name.clone())
            .unwrap_or_default();
        Ok(App {
            net,
            db,
            layers,
            default_layer,
            max_upload: DEFAULT_MAX_UPLOAD,
            max_frame_pixels: DEFAULT_MAX_FRAME_PIXELS,
            hosts: HostRules::new(&[]),
            max_connections: None,
            busy: AtomicBool::new(false),
            reports: tokio::sync::Semaphore::new(1),
            concepts: tokio::sync::OnceCell::new(),
        })
    }

    /// The inference slot, or `None` when a frame is being processed.
    pub fn try_slot(self: &Arc<App>) -> Option<Slot> {
        self.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// A layer by name or alias; only taps are offered.
    pub fn layer(&self, name: &str) -> Option<&LayerEntry> {
        let node = self.net.arch.find(name)?;
        self.layers.iter().find(|l| l.node == node)
    }
}

/// Binds `addr` and serves `app` until the process ends. Prints
/// `listening on http://ADDR/` (the real port when `addr` asks for port 0).
///
/// Each connection is served by hyper's HTTP/1 builder with a header read timeout,
/// which also closes idle keep-alive connections; at most `max_connections` are
/// served at once (the rest wait in the kernel's listen queue), so idle or slow
/// sockets cannot use up the descriptors, and accept errors (EMFILE) are waited out.
pub fn serve(mut app: App, addr: SocketAddr) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|cause| Error::Serve {
            what: "cannot start the server runtime".into(),
            cause,
        })?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|cause| Error::Serve {
                what: format!("cannot listen on {addr}"),
                cause,
            })?;
        let local = listener.local_addr().map_err(|cause| Error::Serve {
            what: addr.to_string(),
            cause,
        })?;
        if !local.ip().is_loopback() {
            eprintln!(
                "warning: listening on {local}, reachable from other machines: anyone who \
                 can connect sees the indexed images"
            );
        }
        app.hosts.port = local.port();
        let limit = app.max_connections.unwrap_or_else(connection_limit).max(1);
        let app = Arc::new(app);
        let router = router(app.clone());
        eprintln!("listening on http://{local}/");
        // Scoring a large index takes seconds: start now, so that the first unit the
        // page asks for need not wait for it (a failure is reported again to requests).
        tokio::spawn(async move {
            if let Err(e) = handlers::concepts(&app).await {
                eprintln!("warning: no concepts: {}", e.1);
            }
        });
        let slots = Arc::new(tokio::sync::Semaphore::new(limit));
        let open: Arc<Mutex<Vec<Arc<Conn>>>> = Arc::default();
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                // Out of descriptors, or a connection reset before it was accepted:
                // wait for others to close, then go on.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // All slots taken: the connection idle longest makes room for this one,
            // so idle sockets cannot keep a client waiting for their timeout.
            let slot = match slots.clone().try_acquire_owned() {
                Ok(s) => s,
                Err(_) => {
                    shed_idlest(&open);
                    slots
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed")
                }
            };
            let conn = Arc::new(Conn::new());
            open.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn.clone());
            let (router, open) = (router.clone(), open.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let mine = conn.clone();
                let service = hyper::service::service_fn(move |req| {
                    let mut router = router.clone();
                    let mine = mine.clone();
                    mine.in_flight.fetch_add(1, Ordering::AcqRel);
                    async move {
                        let r = tower_service::Service::call(&mut router, req).await;
                        mine.in_flight.fetch_sub(1, Ordering::AcqRel);
                        mine.touch();
                        r
                    }
                });
                let serving = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                tokio::select! {
                    _ = serving => {}
                    _ = conn.shed.notified() => {}
                }
                open.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|c| !Arc::ptr_eq(c, &conn));
            });
        }
    })
}

/// A served connection, as the accept loop sees it.
struct Conn {
    /// Requests being handled now.
    in_flight: AtomicUsize,
    /// When it was accepted or last answered a request.
    last: Mutex<std::time::Instant>,
    /// Told to close, to make room.
    shed: tokio::sync::Notify,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(std::time::Instant::now()),
            shed: tokio::sync::Notify::new(),
        }
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now();
    }
}

/// Closes the connection that has been idle longest, if any is idle.
fn shed_idlest(open: &Mutex<Vec<Arc<Conn>>>) {
    let open = open.lock().unwrap_or_else(|e| e.into_inner());
    let idlest = open
        .iter()
        .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
        .min_by_key(|c| *c.last.lock().unwrap_or_else(|e| e.into_inner()));
    if let Some(c) = idlest {
        c.shed.notify_one();
    }
}

/// Connections to serve at once: the descriptor limit, less what the process
/// needs besides (the database, indexed photos, the runtime), at most 1024.
fn connection_limit() -> usize {
    #[cfg(unix)]
    {
        let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: `r` is a valid rlimit for getrlimit to fill.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
            let soft = usize::try_from(r.rlim_cur).unwrap_or(usize::MAX);
            return soft.saturating_sub(32).clamp(8, 1024);
        }
    }
    256
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_frame_at_a_time_and_the_slot_frees_on_drop() {
        let app = Arc::new(App::new(Network::embedded_default().unwrap(), None).unwrap());
        let first = app.try_slot().expect("free at start");
        assert!(app.try_slot().is_none(), "a second frame must be refused");
        drop(first);
        assert!(
            app.try_slot().is_some(),
            "free again once the first is done"
        );
    }

    #[test]
    fn every_tap_is_offered_and_the_default_is_a_middle_layer() {
        let app = App::new(Network::embedded_default().unwrap(), None).unwrap();
        let taps = app.net.arch.taps();
        assert_eq!(app.layers.len(), taps.len());
        let d = app.layer(&app.default_layer).unwrap();
        // Lite0's mid-network maps are 14x14 or 28x28, neither the stem nor the head.
        assert!(d.h == 14 || d.h == 28, "{d:?}");
        assert!(app.layer("logits").is_some());
        assert!(app.layer("no-such-layer").is_none());
    }
}
