//! `GET /accounts`: every configured SIP account and its registration.

use axum::extract::{Path, State};
use axum::Json;

use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::accounts::status::AccountStatus;

/// Every account, in config order: its AOR and registration state.
#[utoipa::path(get, path = "/accounts", tag = "accounts",
    responses(
        (status = 200, body = [AccountStatus]),
        (status = 401, description = "Token", body = ErrorBody),
    ))]
pub async fn list(State(state): State<AppState>) -> Json<Vec<AccountStatus>> {
    Json(state.board.accounts.all())
}

/// One account by name.
#[utoipa::path(get, path = "/accounts/{name}", tag = "accounts",
    params(("name" = String, Path, description = "The account's name")),
    responses(
        (status = 200, body = AccountStatus),
        (status = 401, description = "Token", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    ))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<AccountStatus>, ApiError> {
    state
        .board
        .accounts
        .get(&name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no account {name}")))
}
