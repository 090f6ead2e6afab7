//! `n` choices on chat completions, as OpenAI answers them: n choices indexed 0..n, each capped
//! by max_tokens on its own, the usage summing their completion tokens; and its 400s.

use super::*;

// system "You are terse." = 4 + 3, user "Hello there world" = 4 + 3, plus 3.
const PROMPT_TOKENS: u64 = 17;
const REPLY: &str = "Simulated reply from gpt-4o-mini. You said: Hello there world";

#[tokio::test]
async fn n_choices_non_streamed() {
    let addr = start(SimConfig::default()).await;
    let request = with(chat("Hello there world"), json!({"n": 3}));
    let (status, _, body) = post(addr, "/v1/chat/completions", &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i);
        assert_eq!(choice["message"]["content"], REPLY);
        assert_eq!(choice["finish_reason"], "stop");
    }
    assert_eq!(body["usage"], usage(PROMPT_TOKENS, 3 * 9, 0, 0));

    // Each choice is capped on its own; reasoning=N is reported once for the response.
    let request = with(
        chat("Hello there world [[sim:reasoning=5]]"),
        json!({"n": 2, "max_completion_tokens": 4}),
    );
    let (_, _, body) = post(addr, "/v1/chat/completions", &request).await;
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    for choice in choices {
        assert_eq!(choice["message"]["content"], "Simulated reply from gpt-4o-mini.");
        assert_eq!(choice["finish_reason"], "length");
    }
    assert_eq!(body["usage"], usage(PROMPT_TOKENS + 1, 2 * 4 + 5, 0, 5));
}

#[tokio::test]
async fn n_absent_or_null_is_one_choice() {
    let addr = start(SimConfig::default()).await;
    for extra in [json!({}), json!({"n": null}), json!({"n": 1})] {
        let (status, _, body) = post(addr, "/v1/chat/completions", &with(chat("Hello there world"), extra)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["choices"].as_array().unwrap().len(), 1);
        assert_eq!(body["usage"]["completion_tokens"], 9);
    }
}

#[tokio::test]
async fn n_choices_of_tool_calls_have_their_own_ids() {
    let addr = start(SimConfig::default()).await;
    let tools =
        json!([{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "b"}}]);
    let request = with(chat("weather"), json!({"n": 2, "tools": tools}));
    let (_, _, body) = post(addr, "/v1/chat/completions", &request).await;
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    let ids: Vec<&str> = choices
        .iter()
        .flat_map(|c| c["message"]["tool_calls"].as_array().unwrap())
        .map(|call| call["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4);
    assert!(
        ids.iter()
            .all(|id| ids.iter().filter(|other| *other == id).count() == 1),
        "{ids:?}"
    );
    assert!(choices.iter().all(|c| c["finish_reason"] == "tool_calls"));
    assert_eq!(body["usage"]["completion_tokens"], 2 * 2 * 10);
}

#[tokio::test]
async fn n_choices_streamed_in_turn() {
    let addr = start(SimConfig::default()).await;
    let request = with(
        chat("Hello there world"),
        json!({"n": 3, "max_tokens": 5, "stream": true, "stream_options": {"include_usage": true}}),
    );
    let (events, clean) = events(addr, &request).await;
    assert!(clean);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = chunks(&events);
    // per choice: role + 5 words + finish; then the usage chunk
    assert_eq!(chunks.len(), 3 * 7 + 1);
    for (i, per_choice) in chunks[..21].chunks(7).enumerate() {
        for chunk in per_choice {
            let choices = chunk["choices"].as_array().unwrap();
            assert_eq!(choices.len(), 1);
            assert_eq!(choices[0]["index"], i);
        }
        assert_eq!(per_choice[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = per_choice
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Simulated reply from gpt-4o-mini. You");
        assert!(
            per_choice[..6]
                .iter()
                .all(|c| c["choices"][0]["finish_reason"].is_null())
        );
        assert_eq!(per_choice[6]["choices"][0]["finish_reason"], "length");
    }
    assert_eq!(chunks[21]["choices"], json!([]));
    assert_eq!(chunks[21]["usage"], usage(PROMPT_TOKENS, 3 * 5, 0, 0));

    // cut=N counts content chunks over all choices, and no choice gets a finish chunk.
    let request = with(
        chat("Hello there world [[sim:cut=12]]"),
        json!({"n": 2, "stream": true}),
    );
    let (cut_events, clean) = super::events(addr, &request).await;
    assert!(!clean);
    let cut_chunks = super::chunks(&cut_events);
    assert_eq!(cut_chunks.len(), 1 + 10 + 1 + 2);
    assert!(cut_chunks.iter().all(|c| c["choices"][0]["finish_reason"].is_null()));
    assert_eq!(cut_chunks.last().unwrap()["choices"][0]["index"], 1);
}

#[tokio::test]
async fn n_choices_stream_tool_calls_per_choice() {
    let addr = start(SimConfig::default()).await;
    let tools = json!([{"type": "function", "function": {"name": "a"}}]);
    let request = with(chat("weather"), json!({"n": 2, "tools": tools, "stream": true}));
    let (events, _) = events(addr, &request).await;
    let chunks = chunks(&events);
    let finishes: Vec<(u64, &str)> = chunks
        .iter()
        .filter_map(|c| {
            let choice = &c["choices"][0];
            Some((choice["index"].as_u64()?, choice["finish_reason"].as_str()?))
        })
        .collect();
    assert_eq!(finishes, vec![(0, "tool_calls"), (1, "tool_calls")]);
    let headers: Vec<(u64, u64)> = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"].is_string())
        .map(|c| {
            let choice = &c["choices"][0];
            (
                choice["index"].as_u64().unwrap(),
                choice["delta"]["tool_calls"][0]["index"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(headers, vec![(0, 0), (1, 0)]);
}

#[tokio::test]
async fn n_out_of_range_is_an_openai_400() {
    let addr = start(SimConfig::default()).await;
    for (n, message, code) in [
        (
            json!(0),
            "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead.",
            "integer_below_min_value",
        ),
        (
            json!(-3),
            "Invalid 'n': integer below minimum value. Expected a value >= 1, but got -3 instead.",
            "integer_below_min_value",
        ),
        (
            json!(129),
            "Invalid 'n': integer above maximum value. Expected a value <= 128, but got 129 instead.",
            "integer_above_max_value",
        ),
    ] {
        let (status, _, body) = post(addr, "/v1/chat/completions", &with(chat("hi"), json!({"n": n}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{n}");
        assert_eq!(
            body["error"],
            json!({"message": message, "type": "invalid_request_error", "param": "n", "code": code})
        );
    }
    let (status, _, body) = post(addr, "/v1/chat/completions", &with(chat("hi"), json!({"n": "2"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, _, body) = post(addr, "/v1/chat/completions", &with(chat("hi"), json!({"n": 128}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["choices"].as_array().unwrap().len(), 128);
}

#[tokio::test]
async fn choices_share_the_word_limit() {
    let addr = start(SimConfig::default()).await;
    let request = with(chat("hi [[sim:words=99999999]]"), json!({"n": 4}));
    let (status, _, body) = post(addr, "/v1/chat/completions", &request).await;
    assert_eq!(status, StatusCode::OK);
    for choice in body["choices"].as_array().unwrap() {
        let words = choice["message"]["content"].as_str().unwrap().split(' ').count();
        assert_eq!(words, 25_000);
    }
    assert_eq!(body["usage"]["completion_tokens"], 100_000);
}
