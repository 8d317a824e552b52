//! What a call sends, frame by frame: a prompt (the greeting or a `PLAY`ed
//! file) while one plays, otherwise the client's queued audio.
//!
//! Barge-in is the rule that joins the two: client audio arriving, or a
//! `CLEAR`, cuts the prompt off, so the client's audio goes out in the very
//! next frame. Pure: the media clock calls [`OutboundAudio::next_frame`]
//! once per tick.

use std::sync::Arc;

use super::pace::{stretch_into, PaceKeeper};
use super::playout::{PlayoutQueue, QueueFull, FRAME_SAMPLES};

/// A prompt ready to play: 8 kHz mono samples, shared by every call playing it.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub name: Arc<str>,
    pub samples: Arc<[i16]>,
}

/// A prompt stopped playing, because it ended or was cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptEnded {
    pub name: Arc<str>,
    /// Whether the caller heard it to the end.
    pub completed: bool,
    /// The greeting is the daemon's own: its end is not reported as `PLAYED`.
    pub greeting: bool,
}

#[derive(Debug)]
struct Playing {
    prompt: Prompt,
    position: usize,
    greeting: bool,
}

impl Playing {
    fn ended(self, completed: bool) -> PromptEnded {
        PromptEnded {
            name: self.prompt.name,
            completed,
            greeting: self.greeting,
        }
    }
}

#[derive(Debug)]
pub struct OutboundAudio {
    queue: PlayoutQueue,
    playing: Option<Playing>,
    /// Set while a device (on a clock of its own) feeds the queue.
    pace: Option<PaceKeeper>,
    /// Reused for paced frames.
    taken: Vec<i16>,
    /// Whether the last frame carried the client's audio.
    client_spoke: bool,
}

impl OutboundAudio {
    pub fn new(queue_capacity: usize) -> Self {
        OutboundAudio {
            queue: PlayoutQueue::new(queue_capacity),
            playing: None,
            pace: None,
            taken: Vec::with_capacity(FRAME_SAMPLES + 1),
            client_spoke: false,
        }
    }

    /// Client audio arrives on a clock other than ours (a device): keep
    /// its queue near a steady depth instead of playing it as it comes.
    pub fn follow_device_clock(&mut self, on: bool) {
        self.pace = on.then(PaceKeeper::new);
    }

    /// Starts a prompt now, replacing (and reporting) any prompt playing.
    pub fn play(&mut self, prompt: Prompt, greeting: bool) -> Option<PromptEnded> {
        let replaced = self.playing.take().map(|p| p.ended(false));
        self.playing = Some(Playing {
            prompt,
            position: 0,
            greeting,
        });
        replaced
    }

    /// Queues client audio (16-bit LE PCM), cutting off any prompt.
    pub fn push_client(&mut self, bytes: &[u8]) -> (Result<(), QueueFull>, Option<PromptEnded>) {
        let cut = self.playing.take().map(|p| p.ended(false));
        (self.queue.push_le_bytes(bytes), cut)
    }

    /// Whether a talkspurt waits to go out: a whole frame of the client's
    /// audio is queued and the last frame carried none of it (silence, a
    /// prompt, an underrun). Never for audio paced to a device's clock,
    /// whose queue depth is kept on purpose. See `clock.rs`.
    pub fn talkspurt_ready(&self) -> bool {
        self.pace.is_none()
            && self.playing.is_none()
            && !self.client_spoke
            && self.queue.len() >= FRAME_SAMPLES
    }

    /// Whether the client was speaking (the last frame was its audio) and
    /// no whole frame of its audio waits: its next frame is late, or its
    /// talkspurt has ended. See `clock.rs`.
    pub fn starved(&self) -> bool {
        self.pace.is_none()
            && self.playing.is_none()
            && self.client_spoke
            && self.queue.len() < FRAME_SAMPLES
    }

    /// Drops the client's queued audio and any prompt (`CLEAR`).
    pub fn clear(&mut self) -> Option<PromptEnded> {
        self.queue.clear();
        // Silence from here: audio after it starts a new talkspurt.
        self.client_spoke = false;
        self.playing.take().map(|p| p.ended(false))
    }

    pub fn is_playing(&self) -> bool {
        self.playing.is_some()
    }

    /// Fills this tick's frame; reports a prompt that ran out in it.
    pub fn next_frame(&mut self, frame: &mut [i16; FRAME_SAMPLES]) -> Option<PromptEnded> {
        let Some(playing) = &mut self.playing else {
            self.client_spoke = match &mut self.pace {
                None => self.queue.pop_frame(frame) > 0,
                Some(keeper) => {
                    let want = keeper.samples_for_frame(self.queue.len());
                    self.taken.clear();
                    self.queue.take(want, &mut self.taken);
                    if self.taken.len() == want {
                        stretch_into(&self.taken, frame);
                    } else {
                        // Ran dry: what there is, then silence.
                        frame[..self.taken.len()].copy_from_slice(&self.taken);
                        frame[self.taken.len()..].fill(0);
                    }
                    !self.taken.is_empty()
                }
            };
            return None;
        };
        self.client_spoke = false;
        let rest = &playing.prompt.samples[playing.position..];
        let n = rest.len().min(FRAME_SAMPLES);
        frame[..n].copy_from_slice(&rest[..n]);
        frame[n..].fill(0);
        playing.position += n;
        if playing.position < playing.prompt.samples.len() {
            return None;
        }
        self.playing.take().map(|p| p.ended(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(name: &str, value: i16, samples: usize) -> Prompt {
        Prompt {
            name: name.into(),
            samples: vec![value; samples].into(),
        }
    }

    fn le(value: i16, samples: usize) -> Vec<u8> {
        std::iter::repeat_n(value.to_le_bytes(), samples)
            .flatten()
            .collect()
    }

    #[test]
    fn a_prompt_plays_to_its_end_then_queued_audio_follows() {
        let mut out = OutboundAudio::new(8000);
        assert_eq!(out.play(prompt("hello.wav", 7, 400), false), None);
        let mut frame = [0; FRAME_SAMPLES];
        assert_eq!(out.next_frame(&mut frame), None);
        assert!(frame.iter().all(|&s| s == 7));
        assert_eq!(out.next_frame(&mut frame), None);
        let ended = out.next_frame(&mut frame).expect("ends in the third frame");
        assert!(ended.completed && !ended.greeting);
        assert_eq!(&*ended.name, "hello.wav");
        assert!(frame[..80].iter().all(|&s| s == 7));
        assert!(frame[80..].iter().all(|&s| s == 0), "padded with silence");
        out.next_frame(&mut frame);
        assert!(frame.iter().all(|&s| s == 0));
    }

    #[test]
    fn client_audio_barges_in_on_the_very_next_frame() {
        let mut out = OutboundAudio::new(8000);
        out.play(prompt("greeting", 7, 8000), true);
        let mut frame = [0; FRAME_SAMPLES];
        out.next_frame(&mut frame);
        let (queued, cut) = out.push_client(&le(-3, 160));
        assert_eq!(queued, Ok(()));
        let cut = cut.expect("the greeting is cut off");
        assert!(cut.greeting && !cut.completed);
        assert_eq!(out.next_frame(&mut frame), None);
        assert!(
            frame.iter().all(|&s| s == -3),
            "the frame right after holds the client's audio, not the greeting"
        );
        assert!(!out.is_playing());
    }

    #[test]
    fn clear_stops_the_prompt_and_drops_queued_audio() {
        let mut out = OutboundAudio::new(8000);
        let _ = out.push_client(&le(5, 1600));
        out.play(prompt("music.wav", 9, 8000), false);
        let cut = out.clear().unwrap();
        assert!(!cut.completed);
        let mut frame = [1; FRAME_SAMPLES];
        out.next_frame(&mut frame);
        assert!(frame.iter().all(|&s| s == 0));
        assert_eq!(out.clear(), None, "nothing left to cut");
    }

    #[test]
    fn play_while_playing_reports_the_replaced_prompt() {
        let mut out = OutboundAudio::new(8000);
        out.play(prompt("a.wav", 1, 8000), false);
        let replaced = out.play(prompt("b.wav", 2, 8000), false).unwrap();
        assert_eq!(&*replaced.name, "a.wav");
        assert!(!replaced.completed);
        let mut frame = [0; FRAME_SAMPLES];
        out.next_frame(&mut frame);
        assert_eq!(frame[0], 2);
    }

    #[test]
    fn queued_audio_waits_behind_a_prompt_started_after_it() {
        let mut out = OutboundAudio::new(8000);
        let _ = out.push_client(&le(5, 160));
        out.play(prompt("beep.wav", 9, 160), false);
        let mut frame = [0; FRAME_SAMPLES];
        assert!(out.next_frame(&mut frame).is_some());
        assert_eq!(frame[0], 9);
        out.next_frame(&mut frame);
        assert_eq!(frame[0], 5);
    }

    #[test]
    fn a_talkspurt_is_a_whole_frame_after_frames_without_client_audio() {
        let mut out = OutboundAudio::new(8000);
        let mut frame = [0; FRAME_SAMPLES];
        out.next_frame(&mut frame); // silence
        let _ = out.push_client(&le(1, 80));
        assert!(!out.talkspurt_ready(), "half a frame waits for the rest");
        let _ = out.push_client(&le(1, 80));
        assert!(out.talkspurt_ready(), "first whole frame after silence");
        out.next_frame(&mut frame);
        let _ = out.push_client(&le(1, 160));
        assert!(
            !out.talkspurt_ready(),
            "a client keeping pace: the last frame was its audio"
        );
        out.next_frame(&mut frame);
        out.next_frame(&mut frame); // an underrun: nothing of the client's
        let _ = out.push_client(&le(1, 160));
        assert!(out.talkspurt_ready(), "audio after an underrun");
        out.next_frame(&mut frame);
        out.play(prompt("beep.wav", 9, 800), false);
        out.next_frame(&mut frame);
        assert!(!out.talkspurt_ready(), "the prompt plays, nothing queued");
        let _ = out.push_client(&le(1, 160));
        assert!(out.talkspurt_ready(), "audio over a prompt (barge-in)");
        out.follow_device_clock(true);
        assert!(!out.talkspurt_ready(), "a device's audio keeps its pace");
    }

    #[test]
    fn starved_while_the_client_speaks_and_no_whole_frame_waits() {
        let mut out = OutboundAudio::new(8000);
        let mut frame = [0; FRAME_SAMPLES];
        assert!(!out.starved(), "silence is not starving");
        let _ = out.push_client(&le(1, 160));
        assert!(!out.starved());
        out.next_frame(&mut frame);
        assert!(out.starved(), "spoke, and the next frame is not there");
        let _ = out.push_client(&le(1, 80));
        assert!(out.starved(), "half a frame is not there either");
        let _ = out.push_client(&le(1, 80));
        assert!(!out.starved());
        out.next_frame(&mut frame);
        assert!(out.starved());
        out.clear();
        assert!(!out.starved(), "CLEAR asks for silence");
        let _ = out.push_client(&le(1, 160));
        out.next_frame(&mut frame);
        assert!(out.starved());
        out.play(prompt("beep.wav", 9, 800), false);
        assert!(!out.starved(), "a prompt plays instead");
    }
}
