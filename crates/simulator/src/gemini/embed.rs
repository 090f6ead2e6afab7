//! `models/{model}:embedContent` (`{"embedding":{"values":[…]}}`) and `:batchEmbedContents`
//! (`{"embeddings":[{"values":[…]}]}`), with the crate's deterministic unit-norm vectors seeded by
//! a content's text parts concatenated; 768 dimensions unless `outputDimensionality` says.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::error::{self, GeminiFaults};
use super::request::Content;
use crate::SimState;
use crate::body::SimBody;
use crate::conn::ConnControl;
use crate::embedding;
use crate::exchange;

/// Dimensions of a vector unless the request asks otherwise (`gemini-embedding-001` defaults to
/// 3072, `text-embedding-004` to 768; the simulator picks the latter).
const DEFAULT_DIMENSIONS: usize = 768;
/// The most dimensions a request may ask for.
const MAX_DIMENSIONS: u64 = 16_384;

/// One `EmbedContentRequest`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmbedRequest {
    content: Option<Content>,
    #[serde(alias = "output_dimensionality")]
    output_dimensionality: Option<u64>,
}

/// A `BatchEmbedContentsRequest`.
#[derive(Deserialize)]
struct BatchRequest {
    requests: Option<Vec<EmbedRequest>>,
}

#[derive(Serialize)]
struct Values {
    values: Vec<f32>,
}

#[derive(Serialize)]
struct Single {
    embedding: Values,
}

#[derive(Serialize)]
struct Batch {
    embeddings: Vec<Values>,
}

/// Handles one `embedContent` (or, with `batch`, `batchEmbedContents`) request.
pub(super) async fn handle(
    request: Request<Incoming>,
    state: &SimState,
    control: &ConnControl,
    batch: bool,
) -> Response<SimBody> {
    let mut directives = exchange::header_directives(request.headers());
    let Some(body) = exchange::read_body(request.into_body()).await else {
        return error::unreadable_body();
    };
    let requests = if batch {
        match serde_json::from_slice::<BatchRequest>(&body) {
            Ok(BatchRequest {
                requests: Some(requests),
            }) if !requests.is_empty() => requests,
            Ok(_) => return error::invalid("* BatchEmbedContentsRequest.requests: requests is not specified"),
            Err(err) => return error::bad_body(&err),
        }
    } else {
        match serde_json::from_slice::<EmbedRequest>(&body) {
            Ok(request) => vec![request],
            Err(err) => return error::bad_body(&err),
        }
    };
    let mut vectors = Vec::with_capacity(requests.len());
    for request in &requests {
        let text: String = request
            .content
            .iter()
            .flat_map(|c| &c.parts)
            .filter_map(|p| p.text.as_deref())
            .collect();
        if text.is_empty() {
            return error::invalid("* EmbedContentRequest.content: contents is not specified");
        }
        let dims = match request.output_dimensionality {
            None => DEFAULT_DIMENSIONS,
            Some(n @ 1..=MAX_DIMENSIONS) => n as usize,
            Some(_) => return error::invalid("* EmbedContentRequest.output_dimensionality: out of range"),
        };
        directives.apply_text(&text);
        vectors.push((embedding::seed_text(&text), dims));
    }
    if let Some(fault) = directives.fault() {
        return exchange::inject(fault, control, &GeminiFaults { stream: None }).await;
    }
    exchange::pause(directives.pacing(&state.config).ttft).await;
    let mut values = vectors.into_iter().map(|(seed, dims)| Values {
        values: embedding::unit_vector(seed, dims),
    });
    let body = if batch {
        serde_json::to_vec(&Batch {
            embeddings: values.collect(),
        })
    } else {
        serde_json::to_vec(&Single {
            embedding: values.next().unwrap_or(Values { values: Vec::new() }),
        })
    };
    match body {
        Ok(body) => exchange::json(StatusCode::OK, body),
        Err(_) => error::response(StatusCode::INTERNAL_SERVER_ERROR, "serialisation failed"),
    }
}
