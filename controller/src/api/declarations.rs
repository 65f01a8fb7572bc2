//! `POST /api/v1/declarations` (operator): translate words into declarations with the
//! configured model, validated against the declarations of the commit last fetched, and store
//! the request with its provenance (text hash, model, prompt version, generated YAML hash,
//! time, who asked). `GET /api/v1/declarations[/{id}]` reads them back.
//!
//! Nothing here commits or applies anything: the YAML is for review, to be committed to the
//! repository (where its resources always need an approval).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mycopod_specs::Loaded;
use mycopod_specs::kinds::Kind;
use mycopod_specs::values::Name;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::session::Body;
use crate::declarations::{self, PROMPT_VERSION, Request, TranslateError, output::sha256_hex};
use crate::model::{Role, Scope};
use crate::store::{DeclarationRequest, NewDeclarationRequest};

/// The longest request text accepted.
pub const MAX_TEXT_CHARS: usize = 4000;

pub(super) fn routes(_state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_declarations, create_declaration))
        .routes(routes!(get_declaration))
}

/// `POST /declarations` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDeclarationBody {
    /// The declaration's name (a DNS label); generated resources are labelled with it.
    /// Default: made from the text.
    #[serde(default)]
    pub name: Option<String>,
    /// What you want, in your own words.
    pub text: String,
    /// Kinds the translation may produce (default: Guest, ModbusDevice, AlertRule,
    /// NotificationChannel, ProxmoxCluster).
    #[serde(default)]
    pub kinds: Vec<String>,
}

/// `GET /declarations` query.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Page size (default 50, at most 500).
    pub limit: Option<u32>,
}

fn view(d: &DeclarationRequest) -> Value {
    json!({
        "id": d.id,
        "name": d.name,
        "text": d.text,
        "status": d.status,
        "yaml": d.generated_yaml,
        "diagnostics": d.diagnostics,
        "error": d.error,
        "provenance": {
            "text_sha256": d.text_sha256,
            "model": d.model,
            "prompt_version": d.prompt_version,
            "yaml_sha256": d.yaml_sha256,
            "requested_by": d.requested_by,
            "created_at": d.created_at,
        },
    })
}

/// Translates a request into declarations and stores it. 201 with the YAML when it validated;
/// 422 (`translation_invalid`) with the findings when the answers did not validate after one
/// correction; 502 (`model_failed`) when the model could not be asked; 503 (`no_model`)
/// without a model configured. Every outcome but 503 is stored.
#[utoipa::path(post, path = "/api/v1/declarations", tag = "declarations",
    security(("bearer" = [])),
    request_body = NewDeclarationBody,
    responses(
        (status = 201, description = "translated; the YAML is ready to review and commit", body = Object),
        (status = 422, description = "invalid fields, or answers that do not validate", body = ErrorBody),
        (status = 502, description = "the model failed", body = ErrorBody),
        (status = 503, description = "no model is configured", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_declaration(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Body<NewDeclarationBody>, ApiError>,
) -> Result<Response, ApiError> {
    // The role is checked before the body is looked at.
    caller.require_role(Role::Operator)?;
    let Body(body) = body?;
    let mut invalid: Vec<(&str, String)> = Vec::new();
    let text = body.text.trim().to_owned();
    if text.is_empty() {
        invalid.push(("text", "must not be empty".to_owned()));
    } else if text.chars().count() > MAX_TEXT_CHARS {
        invalid.push(("text", format!("at most {MAX_TEXT_CHARS} characters")));
    }
    let name = body
        .name
        .clone()
        .unwrap_or_else(|| declarations::default_name(&text));
    if let Err(e) = Name::parse(&name) {
        invalid.push(("name", e.to_string()));
    }
    let mut kinds = Vec::new();
    for text in &body.kinds {
        match Kind::from_text(text) {
            Some(Kind::Declaration) | None => {
                invalid.push((
                    "kinds",
                    format!("\"{text}\" is not a kind a translation may produce"),
                ));
            }
            Some(kind) => kinds.push(kind),
        }
    }
    if !invalid.is_empty() {
        return Err(ApiError::invalid_fields(&invalid));
    }
    let Some(model) = state.control().model() else {
        return Err(ApiError::new(
            ErrorCode::NoModel,
            "no model is configured: set [llm] model and base_url (MYCOPOD_LLM_MODEL, \
             MYCOPOD_LLM_BASE_URL) and restart",
        ));
    };
    let repo = state
        .control()
        .files()
        .map(|files| (*files).clone())
        .unwrap_or_else(Loaded::default);
    let request = Request {
        name: name.clone(),
        text: text.clone(),
        kinds,
        file: format!("{name}.yaml"),
    };
    let now = state.now();
    let result = declarations::translate(&model, &repo, &request, now).await;
    let model_name = model.model().to_owned();
    let mut record = NewDeclarationRequest {
        name,
        text_sha256: sha256_hex(text.as_bytes()),
        text,
        model: model_name,
        prompt_version: i64::from(PROMPT_VERSION),
        status: String::new(),
        generated_yaml: None,
        yaml_sha256: None,
        diagnostics: json!([]),
        error: None,
        requested_by: caller.name.clone(),
    };
    match result {
        Ok(t) => {
            record.status = "translated".to_owned();
            record.yaml_sha256 = Some(sha256_hex(t.yaml.as_bytes()));
            record.generated_yaml = Some(t.yaml);
            record.diagnostics = serde_json::to_value(&t.warnings).unwrap_or_else(|_| json!([]));
            let stored = state
                .store()
                .insert_declaration_request(&record, now)
                .await?;
            Ok((StatusCode::CREATED, Json(view(&stored))).into_response())
        }
        Err(TranslateError::Invalid {
            diagnostics,
            last_answer,
            ..
        }) => {
            record.status = "invalid".to_owned();
            record.diagnostics = serde_json::to_value(&diagnostics).unwrap_or_else(|_| json!([]));
            record.error = Some(format!(
                "the answers do not validate after one correction: {}",
                mycopod_specs::render::summary(&diagnostics)
            ));
            let stored = state
                .store()
                .insert_declaration_request(&record, now)
                .await?;
            Err(ApiError::new(
                ErrorCode::TranslationInvalid,
                record.error.clone().unwrap_or_default(),
            )
            .with_details(json!({
                "id": stored.id,
                "diagnostics": stored.diagnostics,
                "last_answer": last_answer,
            })))
        }
        Err(e @ TranslateError::Model { .. }) => {
            let message = crate::error_chain(&e);
            record.status = "failed".to_owned();
            record.error = Some(message.clone());
            let stored = state
                .store()
                .insert_declaration_request(&record, now)
                .await?;
            Err(ApiError::new(ErrorCode::ModelFailed, message)
                .with_details(json!({"id": stored.id})))
        }
    }
}

/// Lists declarations submitted through the API, newest first.
#[utoipa::path(get, path = "/api/v1/declarations", tag = "declarations",
    security(("bearer" = []), ("api_key" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "the declarations", body = Object),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_declarations(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require_any(Role::Viewer, Scope::Read)?;
    let list = state
        .store()
        .list_declaration_requests(query.limit.unwrap_or(50))
        .await?;
    Ok(Json(json!({
        "declarations": list.iter().map(view).collect::<Vec<_>>()
    })))
}

/// One declaration submitted through the API, with its provenance.
#[utoipa::path(get, path = "/api/v1/declarations/{id}", tag = "declarations",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = i64, Path, description = "the declaration's id")),
    responses(
        (status = 200, description = "the declaration", body = Object),
        (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn get_declaration(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    caller.require_any(Role::Viewer, Scope::Read)?;
    let found = state.store().get_declaration_request(id).await?;
    Ok(Json(view(&found)))
}
