//! The Anthropic adapter's readers of upstream bytes: `read_chat`, `read_embeddings`, the stream
//! decoder and `read_error` (input layout: `router_one_fuzz::read_upstream`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use router_one_fuzz::{StreamOutput, read_upstream};
use router_one_providers::anthropic::Anthropic;

fuzz_target!(|input: &[u8]| read_upstream(&Anthropic, input, StreamOutput::Translated));
