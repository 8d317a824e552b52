//! In-dialog requests a call task answers on its own: OPTIONS keep-alives,
//! re-INVITE/UPDATE session refreshes (answered with the SDP we already
//! agreed and the session timer they ask for), and methods siprelay does
//! not take part in.

use std::time::Instant;

use rsipstack::dialog::dialog::{DialogState, TerminatedReason};
use rsipstack::sip::{Header, StatusCode};

use super::session;
use crate::call::session_timer::Answer;

/// How the dialog layer's news matters to the call.
pub enum DialogNews {
    /// The far end rang (outbound).
    Provisional(u16),
    /// The dialog is confirmed: inbound, the caller ACKed our 200.
    Confirmed,
    /// The far end refreshed the session; we answered it so.
    Refreshed(Answer),
    /// The dialog ended for this reason.
    Terminated(TerminatedReason),
    Nothing,
}

/// `floor`: the shortest session interval siprelay takes.
pub async fn handle(state: DialogState, our_sdp: &str, floor: u32) -> DialogNews {
    match state {
        DialogState::Early(_, resp) => DialogNews::Provisional(resp.status_code.code()),
        DialogState::Confirmed(..) => DialogNews::Confirmed,
        DialogState::Terminated(_, reason) => DialogNews::Terminated(reason),
        DialogState::Options(_, _, h) => {
            let _ = h.reply(StatusCode::OK).await;
            DialogNews::Nothing
        }
        DialogState::Updated(_, req, h) => {
            let answer = session::answer_request(Instant::now(), &req.headers, floor);
            if let Answer::TooSmall(min) = answer {
                let min_se = Header::MinSE(min.to_string().into());
                let _ = h
                    .respond(
                        StatusCode::SessionIntervalTooSmall,
                        Some(vec![min_se]),
                        None,
                    )
                    .await;
                return DialogNews::Nothing;
            }
            let mut headers = vec![Header::ContentType("application/sdp".into())];
            headers.extend(session::capability_headers());
            headers.extend(session::answer_headers(&answer));
            let _ = h
                .respond(
                    StatusCode::OK,
                    Some(headers),
                    Some(our_sdp.as_bytes().to_vec()),
                )
                .await;
            DialogNews::Refreshed(answer)
        }
        DialogState::Info(_, _, h)
        | DialogState::Notify(_, _, h)
        | DialogState::Refer(_, _, h)
        | DialogState::Message(_, _, h)
        | DialogState::Publish(_, _, h) => {
            let _ = h.reply(StatusCode::MethodNotAllowed).await;
            DialogNews::Nothing
        }
        DialogState::Calling(_) | DialogState::Trying(_) | DialogState::WaitAck(..) => {
            DialogNews::Nothing
        }
    }
}
