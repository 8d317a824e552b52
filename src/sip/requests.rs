//! In-dialog requests a call task answers on its own: OPTIONS keep-alives,
//! re-INVITE/UPDATE session refreshes (answered with the SDP we already
//! agreed), and methods siprelay does not take part in.

use rsipstack::dialog::dialog::{DialogState, TerminatedReason};
use rsipstack::sip::{Header, StatusCode};

/// How the dialog layer's news matters to the call.
pub enum DialogNews {
    /// The far end rang (outbound).
    Provisional(u16),
    /// The dialog ended for this reason.
    Terminated(TerminatedReason),
    Nothing,
}

pub async fn handle(state: DialogState, our_sdp: &str) -> DialogNews {
    match state {
        DialogState::Early(_, resp) => DialogNews::Provisional(resp.status_code.code()),
        DialogState::Terminated(_, reason) => DialogNews::Terminated(reason),
        DialogState::Options(_, _, h) => {
            let _ = h.reply(StatusCode::OK).await;
            DialogNews::Nothing
        }
        DialogState::Updated(_, _, h) => {
            let content_type = Header::ContentType("application/sdp".into());
            let _ = h
                .respond(
                    StatusCode::OK,
                    Some(vec![content_type]),
                    Some(our_sdp.as_bytes().to_vec()),
                )
                .await;
            DialogNews::Nothing
        }
        DialogState::Info(_, _, h)
        | DialogState::Notify(_, _, h)
        | DialogState::Refer(_, _, h)
        | DialogState::Message(_, _, h)
        | DialogState::Publish(_, _, h) => {
            let _ = h.reply(StatusCode::MethodNotAllowed).await;
            DialogNews::Nothing
        }
        DialogState::Calling(_)
        | DialogState::Trying(_)
        | DialogState::WaitAck(..)
        | DialogState::Confirmed(..) => DialogNews::Nothing,
    }
}
