//! The trash, and restores: a file's old version, a deleted file, or a folder as it was at a
//! moment — the same restore the CLI asks for (`history::run_restore`), as the `web` device.

use super::layout::{csrf_field, file_url, folder_url, human_size, page, time};
use super::{parse_path, parse_required_path, WebError, WebUser};
use crate::routes::AppState;
use axum::extract::State;
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use syncstore_proto::{RestoreAction, RestoreTarget, Revision, TrashQuery};

pub(crate) async fn trash_page(
    State(state): State<AppState>,
    user: WebUser,
) -> Result<Markup, WebError> {
    let trash = state
        .stores
        .meta
        .trash(user.principal.user_id, &TrashQuery::default())
        .await?;
    let body = html! {
        h1 { "Trash" }
        p class="note" {
            "Deleted files are kept here until history retention removes them"
            @if trash.kept_since_ms > 0 { " (kept since " (time(trash.kept_since_ms)) ")" }
            "."
        }
        div id="live" data-live="" {
            @if trash.entries.is_empty() {
                p class="empty" { "The trash is empty." }
            } @else {
                table class="listing trash" {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Size" } th scope="col" { "Deleted" } th scope="col" { "By" } th scope="col" { span class="sr-only" { "Restore" } } } }
                    tbody {
                        @for entry in &trash.entries {
                            tr data-path=(entry.path.as_str()) {
                                td data-label="Name" { (entry.path.as_str()) }
                                td data-label="Size" { (human_size(entry.size)) }
                                td data-label="Deleted" { (time(entry.deleted_at_ms)) }
                                td data-label="By" { (entry.deleted_by.as_str()) }
                                td {
                                    form method="post" action="/restore" class="inline" {
                                        (csrf_field(&user))
                                        input type="hidden" name="kind" value="deleted";
                                        input type="hidden" name="path" value=(entry.path.as_str());
                                        button type="submit" class="restore-deleted" aria-label=(format!("Restore {}", entry.path.as_str())) { "Restore" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Trash", Some(&user), body))
}

#[derive(Deserialize)]
pub(crate) struct RestoreForm {
    #[serde(default)]
    csrf: String,
    /// `version`, `deleted` or `moment`.
    kind: String,
    #[serde(default)]
    path: String,
    rev: Option<u64>,
    /// For `moment`: `YYYY-MM-DDTHH:MM[:SS]`, UTC (what a `datetime-local` input sends).
    at: Option<String>,
}

pub(crate) async fn restore(
    State(state): State<AppState>,
    user: WebUser,
    Form(form): Form<RestoreForm>,
) -> Result<Markup, WebError> {
    user.check_csrf(&form.csrf)?;
    let target = match form.kind.as_str() {
        "version" => RestoreTarget::Version {
            path: parse_required_path(&form.path)?,
            rev: Revision(
                form.rev
                    .ok_or_else(|| WebError::bad_request("which version? (rev is missing)"))?,
            ),
            to: None,
        },
        "deleted" => RestoreTarget::Deleted {
            prefix: Some(parse_required_path(&form.path)?),
            since_ms: None,
            by: None,
        },
        "moment" => {
            let at = form.at.as_deref().unwrap_or("");
            RestoreTarget::Moment {
                path: parse_path(Some(&form.path))?,
                at_ms: parse_moment(at).ok_or_else(|| {
                    WebError::bad_request(format!("{at:?} is not a time like 2026-12-01T09:30"))
                })?,
                to: None,
            }
        }
        other => {
            return Err(WebError::bad_request(format!(
                "unknown kind of restore {other:?}"
            )))
        }
    };
    let response = crate::history::run_restore(&state, &user.principal, &target, false).await?;
    let failed = response
        .steps
        .iter()
        .filter(|step| !step.error.is_empty())
        .count();
    let body = html! {
        h1 { "Restored" }
        @if response.steps.is_empty() {
            p role="status" { "Nothing needed restoring: it is already as asked." }
        } @else {
            p role="status" id="restore-result" {
                (response.steps.len() - failed) " change(s) made"
                @if failed > 0 { ", " strong { (failed) " failed" } }
                "."
            }
            ul class="steps" {
                @for step in &response.steps {
                    li {
                        (match step.action {
                            RestoreAction::Reverted => "brought back an old version of ",
                            RestoreAction::Undeleted => "brought back ",
                            RestoreAction::Trashed => "moved to the trash ",
                            RestoreAction::MadeDir => "made the folder ",
                        })
                        a href=(file_url(step.path.as_str())) { (step.path.as_str()) }
                        @if !step.error.is_empty() { " — " span class="error" { (step.error) } }
                    }
                }
            }
        }
        p { a href=(folder_url(None)) { "Back to your files" } " · " a href="/trash" { "Trash" } }
    };
    Ok(page("Restored", Some(&user), body))
}

/// `YYYY-MM-DDTHH:MM[:SS]` (UTC) as milliseconds since the epoch.
fn parse_moment(text: &str) -> Option<i64> {
    let text = text.trim();
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
        .map(|at| at.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_utc() {
        assert_eq!(parse_moment("1970-01-01T00:01"), Some(60_000));
        assert_eq!(parse_moment("1970-01-01T00:00:02"), Some(2_000));
        assert_eq!(parse_moment("yesterday"), None);
    }
}
