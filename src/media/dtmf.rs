//! DTMF: RFC 4733 telephone-events from the far end, and digits a client
//! asks siprelay to send, as telephone-events when the far end negotiated
//! them and as in-band dual tones when it did not. Pure: the call's receiver
//! feeds [`DtmfDetector`] packets, the media clock asks [`DtmfSender`] for
//! each frame.

use std::collections::VecDeque;

use super::playout::FRAME_SAMPLES;

/// Most digits one request may queue.
pub const MAX_DIGITS: usize = 32;
/// A digit's tone, in frames (100 ms).
const TONE_FRAMES: u16 = 5;
/// Silence between digits, in frames (60 ms).
const GAP_FRAMES: u16 = 3;
/// RFC 4733 2.5.1.4: the end of an event is sent three times.
const END_REPEATS: u16 = 3;

/// One RFC 4733 event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    pub end: bool,
    pub volume: u8,
    pub duration: u16,
}

impl TelephoneEvent {
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        let p: &[u8; 4] = payload.get(..4)?.try_into().ok()?;
        Some(TelephoneEvent {
            event: p[0],
            end: p[1] & 0x80 != 0,
            volume: p[1] & 0x3F,
            duration: u16::from_be_bytes([p[2], p[3]]),
        })
    }

    pub fn write(&self, out: &mut [u8; 4]) {
        out[0] = self.event;
        out[1] = (u8::from(self.end) << 7) | (self.volume & 0x3F);
        out[2..4].copy_from_slice(&self.duration.to_be_bytes());
    }
}

/// The character of a DTMF event code (0-9, *, #, A-D).
pub fn digit_of(event: u8) -> Option<char> {
    b"0123456789*#ABCD".get(event as usize).map(|&b| b as char)
}

/// The event code of a digit; None for anything that is not DTMF. Only
/// upper-case A-D: a lower-case hex call id sent alone (`DTMF:{call_id}`,
/// digits forgotten) must not pass for digits.
pub fn event_of(digit: char) -> Option<u8> {
    b"0123456789*#ABCD"
        .iter()
        .position(|&b| b as char == digit)
        .map(|i| i as u8)
}

/// Reports each far-end event once, however many packets carry it (all
/// packets of one event share its RTP timestamp).
#[derive(Debug, Default)]
pub struct DtmfDetector {
    last: Option<u32>,
}

impl DtmfDetector {
    pub fn on_packet(&mut self, timestamp: u32, payload: &[u8]) -> Option<char> {
        let event = TelephoneEvent::parse(payload)?;
        if self.last == Some(timestamp) {
            return None;
        }
        self.last = Some(timestamp);
        digit_of(event.event)
    }
}

/// What the clock sends as this frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfTick {
    /// No digits to send: play the call's audio as usual.
    Idle,
    /// Send `pcm` (filled: an in-band tone or the silence between digits)
    /// as this frame's audio.
    Audio,
    /// Send this telephone-event packet instead of audio; `pcm` holds the
    /// tone it stands for (for the recording). `first`: set the marker bit.
    /// `start_offset`: the event began this many samples before this tick.
    Event {
        event: TelephoneEvent,
        first: bool,
        start_offset: u32,
    },
}

/// Digits waiting to be sent, and where the current one is.
#[derive(Debug, Default)]
pub struct DtmfSender {
    queue: VecDeque<u8>,
    /// Frames into the current digit (tone, end repeats, gap).
    frame: u16,
}

impl DtmfSender {
    /// Queues digits; an error names the first character that is not DTMF.
    pub fn push(&mut self, digits: &str) -> Result<(), DtmfError> {
        let events = digits
            .chars()
            .map(|c| event_of(c).ok_or(DtmfError::NotDtmf(c)))
            .collect::<Result<Vec<_>, _>>()?;
        if events.is_empty() || self.queue.len() + events.len() > MAX_DIGITS {
            return Err(DtmfError::Length);
        }
        self.queue.extend(events);
        Ok(())
    }

    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// This tick's DTMF. `events`: the far end takes RFC 4733 events.
    pub fn next_frame(&mut self, events: bool, pcm: &mut [i16; FRAME_SAMPLES]) -> DtmfTick {
        let Some(&event) = self.queue.front() else {
            return DtmfTick::Idle;
        };
        let frame = self.frame;
        self.frame += 1;
        let tone_and_end = if events {
            TONE_FRAMES + END_REPEATS - 1
        } else {
            TONE_FRAMES
        };
        if self.frame >= tone_and_end + GAP_FRAMES {
            self.queue.pop_front();
            self.frame = 0;
        }
        if frame >= tone_and_end {
            pcm.fill(0);
            return DtmfTick::Audio;
        }
        let tone_frame = frame.min(TONE_FRAMES - 1);
        if tone_frame == frame {
            dual_tone(event, frame as usize * FRAME_SAMPLES, pcm);
        } else {
            pcm.fill(0);
        }
        if !events {
            return DtmfTick::Audio;
        }
        let end = frame + 1 >= TONE_FRAMES;
        let duration = (tone_frame + 1) * FRAME_SAMPLES as u16;
        DtmfTick::Event {
            event: TelephoneEvent {
                event,
                end,
                volume: 10,
                duration,
            },
            first: frame == 0,
            start_offset: u32::from(frame) * FRAME_SAMPLES as u32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    #[error("{0:?} is not a DTMF digit (0-9, *, #, A-D)")]
    NotDtmf(char),
    #[error("1 to {MAX_DIGITS} digits may wait at a time")]
    Length,
}

/// The row and column frequencies of a DTMF key.
fn frequencies(event: u8) -> (f64, f64) {
    const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
    const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
    // Key positions on the keypad: 1 2 3 A / 4 5 6 B / 7 8 9 C / * 0 # D.
    let (row, col) = match event {
        0 => (3, 1),
        1..=9 => ((event as usize - 1) / 3, (event as usize - 1) % 3),
        10 => (3, 0),
        11 => (3, 2),
        12..=15 => (event as usize - 12, 3),
        _ => (0, 0),
    };
    (ROWS[row], COLS[col])
}

/// Writes the key's dual tone, -10 dBm0-ish per tone, continuing at `offset`.
fn dual_tone(event: u8, offset: usize, pcm: &mut [i16; FRAME_SAMPLES]) {
    let (low, high) = frequencies(event);
    for (i, s) in pcm.iter_mut().enumerate() {
        let t = (offset + i) as f64 / 8000.0;
        let v = 7000.0 * (2.0 * std::f64::consts::PI * low * t).sin()
            + 7000.0 * (2.0 * std::f64::consts::PI * high * t).sin();
        *s = v as i16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goertzel(pcm: &[i16], freq: f64) -> f64 {
        let k = 2.0 * (2.0 * std::f64::consts::PI * freq / 8000.0).cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in pcm {
            let s = x as f64 + k * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        s1 * s1 + s2 * s2 - k * s1 * s2
    }

    #[test]
    fn events_parse_and_write() {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 800,
        };
        let mut b = [0; 4];
        e.write(&mut b);
        assert_eq!(b, [11, 0x8A, 0x03, 0x20]);
        assert_eq!(TelephoneEvent::parse(&b), Some(e));
        assert_eq!(TelephoneEvent::parse(&b[..3]), None);
        assert_eq!(digit_of(11), Some('#'));
        assert_eq!(digit_of(16), None);
        assert_eq!(event_of('A'), Some(12));
        assert_eq!(event_of('a'), None);
    }

    #[test]
    fn each_far_end_event_is_reported_once() {
        let mut d = DtmfDetector::default();
        let start = [5, 0x0A, 0, 160];
        let end = [5, 0x8A, 0x03, 0x20];
        assert_eq!(d.on_packet(1000, &start), Some('5'));
        assert_eq!(d.on_packet(1000, &start), None);
        for _ in 0..3 {
            assert_eq!(d.on_packet(1000, &end), None);
        }
        assert_eq!(d.on_packet(1800, &start), Some('5'), "the same key again");
        assert_eq!(d.on_packet(2600, &[1, 2]), None, "too short");
    }

    #[test]
    fn digits_go_out_as_rfc4733_events_with_three_ends_and_a_gap() {
        let mut s = DtmfSender::default();
        assert_eq!(s.push("1x"), Err(DtmfError::NotDtmf('x')));
        s.push("1#").unwrap();
        let mut pcm = [0; FRAME_SAMPLES];
        let mut ticks = Vec::new();
        loop {
            let t = s.next_frame(true, &mut pcm);
            if t == DtmfTick::Idle {
                break;
            }
            ticks.push(t);
        }
        // Per digit: 5 tone packets (the last of them the first end), 2
        // more ends, 3 gap frames.
        assert_eq!(ticks.len(), 2 * (5 + 2 + 3));
        let events: Vec<_> = ticks
            .iter()
            .filter_map(|t| match t {
                DtmfTick::Event { event, first, .. } => {
                    Some((event.event, *first, event.end, event.duration))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            events[..7],
            [
                (1, true, false, 160),
                (1, false, false, 320),
                (1, false, false, 480),
                (1, false, false, 640),
                (1, false, true, 800),
                (1, false, true, 800),
                (1, false, true, 800),
            ]
        );
        assert_eq!(events[7].0, 11);
        assert!(matches!(ticks[7], DtmfTick::Audio));
        assert!(s.is_idle());
    }

    #[test]
    fn without_events_the_digit_is_a_dual_tone_in_band() {
        let mut s = DtmfSender::default();
        s.push("1").unwrap();
        let mut tone = Vec::new();
        let mut pcm = [0; FRAME_SAMPLES];
        for _ in 0..5 {
            assert_eq!(s.next_frame(false, &mut pcm), DtmfTick::Audio);
            tone.extend_from_slice(&pcm);
        }
        let wanted = goertzel(&tone, 697.0) + goertzel(&tone, 1209.0);
        let other = goertzel(&tone, 852.0) + goertzel(&tone, 1477.0);
        assert!(wanted > 100.0 * other, "697 + 1209 Hz for '1'");
        for _ in 0..3 {
            assert_eq!(s.next_frame(false, &mut pcm), DtmfTick::Audio);
            assert!(pcm.iter().all(|&x| x == 0), "the gap is silent");
        }
        assert_eq!(s.next_frame(false, &mut pcm), DtmfTick::Idle);
    }
}
