//! Call recording (IO shell): one stereo WAV and one JSON sidecar per call,
//! written by a thread of its own so that a slow disk never delays RTP.
//!
//! Each shard of the media clock hands each 5 ms slot's frames over in one batch
//! ([`RecordingSink`]); at most [`MAX_BATCHES_IN_FLIGHT`] batches wait for
//! the writer, and a batch beyond that is dropped and counted. The writer
//! numbers frames, so whatever was dropped comes back as silence of the
//! same length: a recording is never shortened.

pub mod sidecar;
pub mod store;
pub mod wavfile;
mod writer;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use crate::media::tap::{RecordingSink, TappedFrame};
pub use sidecar::Sidecar;
pub use store::{RecordingId, Store};

/// Batches of frames that may wait for the writer: 10 s of one shard's
/// slots (a batch per 5 ms slot that sent any recorded frame).
pub const MAX_BATCHES_IN_FLIGHT: usize = 2000;

/// Tells whoever cares (the call's owner) that its recording stopped.
pub type ErrorReport = Box<dyn Fn(&str) + Send>;

/// How a call ended, for its sidecar.
#[derive(Debug, Clone)]
pub struct Ending {
    pub ended_at: String,
    pub hangup_by: &'static str,
    pub end_reason: String,
    pub sip_status: Option<u16>,
}

enum Job {
    Open {
        key: u64,
        sidecar: Box<Sidecar>,
        report: ErrorReport,
    },
    Frames(Vec<TappedFrame>),
    Close {
        key: u64,
        frames: u64,
        ending: Ending,
    },
    Stop,
}

#[derive(Debug, Default)]
pub struct RecorderStats {
    /// Frames that never reached the disk (a busy writer), written as silence.
    pub frames_dropped: AtomicU64,
    /// Recordings stopped by an error (full disk, unwritable directory).
    pub errors: AtomicU64,
    pub recordings: AtomicU64,
}

pub struct Recorder {
    pub store: Store,
    jobs: mpsc::Sender<Job>,
    in_flight: Arc<AtomicUsize>,
    next_key: AtomicU64,
    pub stats: Arc<RecorderStats>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Recorder {
    /// Repairs what a previous run left unfinished, then starts the writer.
    pub fn start(dir: PathBuf) -> io::Result<Recorder> {
        let store = Store::new(dir);
        if let Err(e) = std::fs::create_dir_all(&store.dir) {
            // Not fatal: each call's recording will report it.
            tracing::error!(dir = %store.dir.display(), error = %e, "recordings directory unusable");
        }
        match store.repair_unfinished() {
            Ok(ids) if !ids.is_empty() => {
                tracing::warn!(
                    count = ids.len(),
                    "repaired recordings left unfinished by the last run"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not scan recordings for repair"),
        }
        let (tx, rx) = mpsc::channel();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(RecorderStats::default());
        let thread = std::thread::Builder::new().name("recorder".into()).spawn({
            let writer = writer::Writer::new(store.clone(), in_flight.clone(), stats.clone());
            move || writer.run(rx)
        })?;
        Ok(Recorder {
            store,
            jobs: tx,
            in_flight,
            next_key: AtomicU64::new(1),
            stats,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn send(&self, job: Job) {
        let _ = self.jobs.send(job);
    }

    /// Starts a recording; its frames come through the tap keyed by the result.
    pub fn open(&self, sidecar: Sidecar, report: ErrorReport) -> u64 {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.stats.recordings.fetch_add(1, Ordering::Relaxed);
        self.send(Job::Open {
            key,
            sidecar: Box::new(sidecar),
            report,
        });
        key
    }

    /// Ends a recording of `frames` frames (any not written become silence).
    pub fn close(&self, key: u64, frames: u64, ending: Ending) {
        self.send(Job::Close {
            key,
            frames,
            ending,
        });
    }

    /// Finishes every open recording and waits for the writer to exit.
    pub fn stop(&self) {
        self.send(Job::Stop);
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl RecordingSink for Recorder {
    fn submit(&self, frames: Vec<TappedFrame>) {
        if frames.is_empty() {
            return;
        }
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_BATCHES_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.stats
                .frames_dropped
                .fetch_add(frames.len() as u64, Ordering::Relaxed);
            return;
        }
        self.send(Job::Frames(frames));
    }
}
