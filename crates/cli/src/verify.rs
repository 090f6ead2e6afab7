//! `router-one verify RECEIPT [--body FILE] [--jwks FILE_OR_URL]`: checks a signed receipt
//! offline (docs/receipts.md) — its batch's EdDSA signature against a JWKS, that its claims are
//! in the batch signed and, with `--body`, that the body's SHA-256 is the receipt's
//! `response_sha256` — and prints its claims. Exit code 0 only if everything checked is valid.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Empty, Limited};
use sha2::{Digest, Sha256};

use router_one_receipts::{Jwks, KeyRing};

use crate::cli::VerifyArgs;

/// The most of a JWKS fetched from a URL.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Runs `verify`.
pub(crate) async fn run(args: VerifyArgs) -> Result<()> {
    let receipt = receipt_text(&args.receipt)?;
    let keys = match &args.jwks {
        Some(source) if source.starts_with("http://") || source.starts_with("https://") => fetch_jwks(source).await?,
        Some(file) => {
            let bytes = std::fs::read(file).with_context(|| format!("reading the JWKS {file}"))?;
            serde_json::from_slice(&bytes).with_context(|| format!("{file} is not a JWKS"))?
        }
        None => {
            let dir = args.data.clone().unwrap_or_else(|| "data".into());
            if !dir.join(router_one_receipts::keys::KEY_FILE).is_file() {
                bail!("no --jwks given and no receipt key file in {}", dir.display());
            }
            KeyRing::load_or_create(&dir)?.jwks()
        }
    };
    let verified = router_one_receipts::verify(&receipt, &keys).context("the receipt is NOT valid")?;
    println!("{}", serde_json::to_string_pretty(&verified.claims)?);
    eprintln!(
        "signature valid: signed by key {} at {} (iat), over a batch of {} receipt(s) this one is in",
        verified.kid, verified.batch.iat, verified.batch.leaves
    );
    if let Some(body) = &args.body {
        let bytes = std::fs::read(body).with_context(|| format!("reading the body {}", body.display()))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        let claimed = verified.claims["response_sha256"].as_str().unwrap_or_default();
        if !actual.eq_ignore_ascii_case(claimed) {
            bail!(
                "the body does NOT match the receipt: its SHA-256 is {actual}, the receipt's response_sha256 is {claimed}"
            );
        }
        eprintln!("body matches: SHA-256 {actual}");
    }
    Ok(())
}

/// The receipt given on the command line, or read from the file it names.
fn receipt_text(arg: &str) -> Result<String> {
    let path = Path::new(arg);
    let text = if !arg.contains(router_one_receipts::batch::PART_SEPARATOR) && path.is_file() {
        std::fs::read_to_string(path).with_context(|| format!("reading the receipt {arg}"))?
    } else {
        arg.to_owned()
    };
    // A stream's last line can be given as it is.
    Ok(text.trim().trim_start_matches(": receipt ").trim().to_owned())
}

/// GETs a JWKS over HTTP(S), within 15 seconds and 1 MiB.
async fn fetch_jwks(url: &str) -> Result<Jwks> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("{url} is not a URL"))?;
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .context("loading the system's trusted roots")?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<bytes::Bytes>>(tls);
    let fetch = async {
        let response = client.get(uri).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .to_bytes();
        anyhow::Ok((status, body))
    };
    let (status, body) = tokio::time::timeout(Duration::from_secs(15), fetch)
        .await
        .with_context(|| format!("fetching {url}: timed out"))?
        .with_context(|| format!("fetching {url}"))?;
    if !status.is_success() {
        bail!("fetching {url}: status {status}");
    }
    serde_json::from_slice(&body).with_context(|| format!("{url} did not answer with a JWKS"))
}
