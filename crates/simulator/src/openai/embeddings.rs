//! `POST /v1/embeddings`: string, string-array, token-array and token-array-array inputs;
//! `encoding_format` `float` (default) or `base64` (little-endian `f32` bytes, standard alphabet).

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::error::{self, OpenAiFaults};
use crate::SimState;
use crate::body::SimBody;
use crate::conn::ConnControl;
use crate::directives::Directives;
use crate::embedding;
use crate::exchange;
use crate::lenient;
use crate::tokens::count_words;

/// The most dimensions a request may ask for.
const MAX_DIMENSIONS: u64 = 16_384;

#[derive(Deserialize)]
struct EmbeddingRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    input: Option<Input<'a>>,
    dimensions: Option<u64>,
    #[serde(borrow)]
    encoding_format: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    List(#[serde(borrow)] Vec<Item<'a>>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Item<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Token(u64),
    Tokens(Vec<u64>),
}

/// One input to embed: its seed and its prompt tokens.
struct Piece {
    seed: u64,
    tokens: u64,
}

/// Handles one embeddings request.
pub(crate) async fn handle(request: Request<Incoming>, state: &SimState, control: &ConnControl) -> Response<SimBody> {
    let mut directives = exchange::header_directives(request.headers());
    if !exchange::has_bearer(request.headers()) {
        return error::missing_api_key();
    }
    let Some(body) = exchange::read_body(request.into_body()).await else {
        return error::unreadable_body();
    };
    let mut rewritten = None;
    let parsed: EmbeddingRequest<'_> = match lenient::from_slice(&body, &mut rewritten) {
        Ok(parsed) => parsed,
        Err(err) => return error::bad_body(&err),
    };
    let Some(model) = parsed.model.as_deref() else {
        return error::invalid_request("you must provide a model parameter", None, None);
    };
    let Some(input) = parsed.input.as_ref() else {
        return error::missing("input");
    };
    let Some(pieces) = pieces(input, &mut directives) else {
        return error::invalid_request(
            "'$.input' is invalid. Please check the API reference.",
            Some("input"),
            None,
        );
    };
    let base64 = match parsed.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return error::invalid_request(
                "'encoding_format' must be 'float' or 'base64'.",
                Some("encoding_format"),
                None,
            );
        }
    };
    let dims = match parsed.dimensions {
        None => embedding::default_dimensions(model),
        Some(n @ 1..=MAX_DIMENSIONS) => n as usize,
        Some(_) => {
            return error::invalid_request("'dimensions' is out of range.", Some("dimensions"), None);
        }
    };
    if let Some(fault) = directives.fault() {
        return exchange::inject(fault, control, &OpenAiFaults { stream: false }).await;
    }
    exchange::pause(directives.pacing(&state.config).ttft).await;
    respond(model, &pieces, dims, base64, directives.report.prompt)
}

/// The inputs to embed, reading directives from their text; `None` if empty or mixed.
fn pieces(input: &Input<'_>, directives: &mut Directives) -> Option<Vec<Piece>> {
    let mut text = |t: &str| {
        directives.apply_text(t);
        Piece {
            seed: embedding::seed_text(t),
            tokens: count_words(t),
        }
    };
    let pieces = match input {
        Input::Text(t) if !t.is_empty() => vec![text(t)],
        Input::Text(_) => return None,
        Input::List(items) => match items.first()? {
            Item::Text(_) => items
                .iter()
                .map(|item| match item {
                    Item::Text(t) if !t.is_empty() => Some(text(t)),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?,
            Item::Token(_) => {
                let tokens = items
                    .iter()
                    .map(|item| match item {
                        Item::Token(t) => Some(*t),
                        _ => None,
                    })
                    .collect::<Option<Vec<u64>>>()?;
                vec![tokens_piece(&tokens)]
            }
            Item::Tokens(_) => items
                .iter()
                .map(|item| match item {
                    Item::Tokens(t) if !t.is_empty() => Some(tokens_piece(t)),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?,
        },
    };
    Some(pieces)
}

fn tokens_piece(tokens: &[u64]) -> Piece {
    Piece {
        seed: embedding::seed_tokens(tokens),
        tokens: tokens.len() as u64,
    }
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// The embeddings of `pieces`; `reported_prompt` (`report_prompt=N`) replaces their token count
/// in `usage`.
fn respond(
    model: &str,
    pieces: &[Piece],
    dims: usize,
    base64: bool,
    reported_prompt: Option<u64>,
) -> Response<SimBody> {
    let data = pieces
        .iter()
        .enumerate()
        .map(|(index, piece)| {
            let vector = embedding::unit_vector(piece.seed, dims);
            let embedding = if base64 {
                Vector::Base64(encode(&vector))
            } else {
                Vector::Float(vector)
            };
            EmbeddingItem {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let tokens = reported_prompt.unwrap_or_else(|| pieces.iter().map(|p| p.tokens).sum());
    let list = EmbeddingList {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    };
    match serde_json::to_vec(&list) {
        Ok(body) => exchange::json(StatusCode::OK, body),
        Err(_) => error::for_status(StatusCode::INTERNAL_SERVER_ERROR, "serialisation failed"),
    }
}

/// Little-endian `f32` bytes in standard base64, as the OpenAI clients decode them.
fn encode(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    STANDARD.encode(bytes)
}
