//! Tool calls: single, parallel, named, none, streamed, and the answer after a tool result.

use super::*;

fn tools(names: &[&str]) -> Value {
    Value::Array(
        names
            .iter()
            .map(|n| json!({"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}))
            .collect(),
    )
}

#[tokio::test]
async fn single_and_parallel_tool_calls() {
    let addr = start(SimConfig::default()).await;
    let request = with(
        chat("Weather in Paris?"),
        json!({"tools": tools(&["get_weather", "get_time"])}),
    );
    let (_, _, body) = post(addr, "/v1/chat/completions", &request).await;
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    for (call, name) in calls.iter().zip(["get_weather", "get_time"]) {
        assert!(call["id"].as_str().unwrap().starts_with("call_sim_"));
        assert_eq!(call["type"], "function");
        assert_eq!(
            call["function"],
            json!({"name": name, "arguments": r#"{"echo":"Weather in Paris?"}"#})
        );
    }
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    assert_eq!(body["usage"]["completion_tokens"], 20);

    let single = with(request.clone(), json!({"parallel_tool_calls": false}));
    let (_, _, body) = post(addr, "/v1/chat/completions", &single).await;
    assert_eq!(body["choices"][0]["message"]["tool_calls"].as_array().unwrap().len(), 1);
    assert_eq!(body["usage"]["completion_tokens"], 10);

    let named = with(
        request.clone(),
        json!({"tool_choice": {"type": "function", "function": {"name": "get_time"}}}),
    );
    let (_, _, body) = post(addr, "/v1/chat/completions", &named).await;
    let calls = body["choices"][0]["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["function"]["name"], "get_time");

    let none = with(request, json!({"tool_choice": "none"}));
    let (_, _, body) = post(addr, "/v1/chat/completions", &none).await;
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());
}

#[tokio::test]
async fn tool_result_turn_is_echoed() {
    let addr = start(SimConfig::default()).await;
    let request = json!({"model": "m", "tools": tools(&["get_weather"]), "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"}]});
    let (_, _, body) = post(addr, "/v1/chat/completions", &request).await;
    assert_eq!(body["choices"][0]["message"]["content"], "Tool said: sunny, 21C");
    assert_eq!(body["usage"]["prompt_tokens"], (4 + 1) + 4 + (4 + 2) + 3);
}

#[tokio::test]
async fn streamed_tool_calls() {
    let addr = start(SimConfig::default()).await;
    let request = with(
        chat("Weather in Paris?"),
        json!({"stream": true, "tools": tools(&["get_weather", "get_time"])}),
    );
    let (events, clean) = events(addr, &request).await;
    assert!(clean);
    let chunks = chunks(&events);
    let mut names = Vec::new();
    let mut arguments = [String::new(), String::new()];
    for chunk in &chunks[1..chunks.len() - 1] {
        let calls = chunk["choices"][0]["delta"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1);
        let index = calls[0]["index"].as_u64().unwrap() as usize;
        if let Some(id) = calls[0].get("id") {
            assert!(id.as_str().unwrap().starts_with("call_sim_"));
            assert_eq!(calls[0]["type"], "function");
            assert_eq!(calls[0]["function"]["arguments"], "");
            names.push((index, calls[0]["function"]["name"].as_str().unwrap().to_owned()));
        } else {
            arguments[index].push_str(calls[0]["function"]["arguments"].as_str().unwrap());
        }
    }
    assert_eq!(names, vec![(0, "get_weather".to_owned()), (1, "get_time".to_owned())]);
    assert_eq!(
        arguments,
        [r#"{"echo":"Weather in Paris?"}"#, r#"{"echo":"Weather in Paris?"}"#]
    );
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");
}
