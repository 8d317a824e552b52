//! The recorder thread: owns every open recording file.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use super::sidecar::Sidecar;
use super::store::{RecordingId, Store};
use super::wavfile::{StereoWavWriter, STEREO_FRAME};
use super::{ErrorReport, Job, RecorderStats};

/// Longest gap filled with silence in one go: a frame index further ahead
/// than this (10 minutes) is a bug, not a slow writer.
const MAX_GAP_FRAMES: u64 = 30_000;

struct Open {
    id: RecordingId,
    sidecar: Sidecar,
    /// None once the recording has failed.
    wav: Option<StereoWavWriter>,
    report: ErrorReport,
}

pub(super) struct Writer {
    store: Store,
    in_flight: Arc<AtomicUsize>,
    stats: Arc<RecorderStats>,
    open: HashMap<u64, Open>,
}

impl Writer {
    pub(super) fn new(
        store: Store,
        in_flight: Arc<AtomicUsize>,
        stats: Arc<RecorderStats>,
    ) -> Self {
        Writer {
            store,
            in_flight,
            stats,
            open: HashMap::new(),
        }
    }

    pub(super) fn run(mut self, jobs: mpsc::Receiver<Job>) {
        while let Ok(job) = jobs.recv() {
            match job {
                Job::Open {
                    key,
                    sidecar,
                    report,
                } => self.open(key, *sidecar, report),
                Job::Frames(frames) => {
                    for f in frames {
                        self.write(f.key, f.index, &f.samples);
                    }
                    self.in_flight.fetch_sub(1, Ordering::AcqRel);
                }
                Job::Close {
                    key,
                    frames,
                    ending,
                } => {
                    if let Some(mut rec) = self.open.remove(&key) {
                        rec.sidecar.ended_at = Some(ending.ended_at);
                        rec.sidecar.hangup_by = Some(ending.hangup_by.to_string());
                        rec.sidecar.end_reason = Some(ending.end_reason);
                        rec.sidecar.sip_status = ending.sip_status;
                        self.finish(rec, frames);
                    }
                }
                Job::Stop => break,
            }
        }
        for (_, mut rec) in self.open.drain() {
            rec.sidecar.end_reason = Some("siprelay stopped".into());
            let frames = rec.wav.as_ref().map_or(0, StereoWavWriter::frames);
            Self::finish_with(&self.store, &self.stats, rec, frames);
        }
    }

    fn open(&mut self, key: u64, sidecar: Sidecar, report: ErrorReport) {
        let Ok(id) = RecordingId::parse(&sidecar.id) else {
            return;
        };
        let wav_path = self.store.wav_path(&id);
        let created = wav_path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| StereoWavWriter::create(&wav_path))
            .and_then(|wav| {
                sidecar.write(&self.store.sidecar_path(&id))?;
                Ok(wav)
            });
        let mut rec = Open {
            id,
            sidecar,
            wav: None,
            report,
        };
        match created {
            Ok(wav) => rec.wav = Some(wav),
            Err(e) => self.fail(&mut rec, &e),
        }
        self.open.insert(key, rec);
    }

    fn write(&mut self, key: u64, index: u64, samples: &[i16; STEREO_FRAME]) {
        let Some(rec) = self.open.get_mut(&key) else {
            return;
        };
        let Some(wav) = rec.wav.as_mut() else {
            return;
        };
        let result = pad_to(wav, index).and_then(|_| {
            if index >= wav.frames() {
                wav.write_frame(samples)
            } else {
                Ok(()) // already written (as silence): too late
            }
        });
        if let Err(e) = result {
            let mut rec = self.open.remove(&key).expect("present above");
            self.fail(&mut rec, &e);
            self.open.insert(key, rec);
        }
    }

    fn finish(&mut self, rec: Open, frames: u64) {
        Self::finish_with(&self.store, &self.stats, rec, frames);
    }

    fn finish_with(store: &Store, stats: &RecorderStats, mut rec: Open, frames: u64) {
        if let Some(mut wav) = rec.wav.take() {
            let done = pad_to(&mut wav, frames).and_then(|_| wav.finish());
            match done {
                Ok(written) => rec.sidecar.duration_s = Some(written as f64 * 0.02),
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(recording = %rec.id.as_str(), error = %e, "recording could not be finished");
                    (rec.report)(&format!("recording {} stopped: {e}", rec.id.as_str()));
                    rec.sidecar.recording_error = Some(e.to_string());
                }
            }
        }
        if let Err(e) = rec.sidecar.write(&store.sidecar_path(&rec.id)) {
            tracing::error!(recording = %rec.id.as_str(), error = %e, "recording sidecar not written");
        }
    }

    fn fail(&self, rec: &mut Open, error: &std::io::Error) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            recording = %rec.id.as_str(),
            call = %rec.sidecar.call_id,
            error = %error,
            "recording stopped; the call goes on"
        );
        (rec.report)(&format!("recording {} stopped: {error}", rec.id.as_str()));
        if let Some(wav) = rec.wav.take() {
            let _ = wav.finish();
        }
        rec.sidecar.recording_error = Some(error.to_string());
        let _ = rec.sidecar.write(&self.store.sidecar_path(&rec.id));
    }
}

/// Writes silence up to frame `index` (frames lost on the way).
fn pad_to(wav: &mut StereoWavWriter, index: u64) -> std::io::Result<()> {
    let target = index.min(wav.frames() + MAX_GAP_FRAMES);
    let silence = [0i16; STEREO_FRAME];
    while wav.frames() < target {
        wav.write_frame(&silence)?;
    }
    Ok(())
}
