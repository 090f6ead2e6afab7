//! The request's options: `tools` and `tool_choice` → `tools` and `toolConfig`, sampling, stop
//! sequences, JSON mode and reasoning effort → `generationConfig`.

use serde_json::value::RawValue;

use router_one_core::ApiError;

use super::request::{FAMILY, bad, is_null};
use super::wire::{CallingConfig, Declaration, GenerationConfig, ThinkingConfig, Tool, ToolConfig};
use crate::openai::wire::{self as oai, ChatBody, ToolChoice, unsupported};
use crate::provider::{ChatRequest, Target};

/// `tools` and `tool_choice`.
pub(crate) fn tools<'b>(chat: &'b ChatBody<'_>) -> Result<(Vec<Tool<'b>>, Option<ToolConfig<'b>>), ApiError> {
    let mut declarations = Vec::new();
    for (i, tool) in chat.tools.iter().flatten().enumerate() {
        if tool.kind != "function" {
            return Err(unsupported(
                format!("tools[{i}].type"),
                FAMILY,
                "only function tools are supported.",
            ));
        }
        let function = tool.function.as_ref().ok_or_else(|| {
            bad(
                format!("tools[{i}].function"),
                format!("'tools[{i}].function' is required."),
            )
        })?;
        declarations.push(Declaration {
            name: &function.name,
            description: function.description.as_deref(),
            parameters_json_schema: function.parameters.filter(|p| !is_null(p)),
        });
    }
    let choice = chat.tool_choice()?;
    let config = match choice {
        None => None,
        Some(ToolChoice::None) if declarations.is_empty() => None,
        Some(ToolChoice::Auto) if declarations.is_empty() => None,
        Some(_) if declarations.is_empty() => {
            return Err(oai::invalid("tool_choice", "'tool_choice' requires 'tools'."));
        }
        Some(choice) => {
            let (mode, allowed) = match choice {
                ToolChoice::None => ("NONE", None),
                ToolChoice::Auto => ("AUTO", None),
                ToolChoice::Required => ("ANY", None),
                ToolChoice::Function(name) => {
                    let known = declarations.iter().find(|d| d.name == name).map(|d| d.name);
                    let name = known.ok_or_else(|| {
                        oai::invalid("tool_choice", "'tool_choice' names a function that is not in 'tools'.")
                    })?;
                    ("ANY", Some([name]))
                }
            };
            Some(ToolConfig {
                function_calling_config: CallingConfig {
                    mode,
                    allowed_function_names: allowed,
                },
            })
        }
    };
    let tools = if declarations.is_empty() {
        Vec::new()
    } else {
        vec![Tool {
            function_declarations: declarations,
        }]
    };
    Ok((tools, config))
}

/// `generationConfig`.
pub(crate) fn generation_config<'b>(
    chat: &'b ChatBody<'_>,
    request: &ChatRequest<'_>,
    target: Target<'_>,
) -> Result<GenerationConfig<'b>, ApiError> {
    let raw = |v: Option<&'b RawValue>| v.filter(|v| !is_null(v));
    let mut config = GenerationConfig {
        max_output_tokens: request.output_limit(target),
        temperature: raw(chat.temperature),
        top_p: raw(chat.top_p),
        top_k: raw(chat.top_k),
        seed: raw(chat.seed),
        presence_penalty: raw(chat.presence_penalty),
        frequency_penalty: raw(chat.frequency_penalty),
        stop_sequences: chat.stop_sequences()?,
        ..GenerationConfig::default()
    };
    if let Some(format) = &chat.response_format {
        match &*format.kind {
            "text" => {}
            "json_object" => config.response_mime_type = Some("application/json"),
            "json_schema" => {
                // `responseJsonSchema` takes the client's JSON Schema as sent; `responseSchema`
                // takes only an OpenAPI subset and would refuse or need rewriting of many schemas.
                let schema = format
                    .json_schema
                    .as_ref()
                    .and_then(|s| s.schema)
                    .filter(|s| !is_null(s))
                    .ok_or_else(|| {
                        oai::invalid(
                            "response_format.json_schema.schema",
                            "'response_format.json_schema.schema' is required.",
                        )
                    })?;
                config.response_mime_type = Some("application/json");
                config.response_json_schema = Some(schema);
            }
            _ => {
                return Err(oai::invalid(
                    "response_format.type",
                    "'response_format.type' must be text, json_object or json_schema.",
                ));
            }
        }
    }
    if let Some(effort) = chat.reasoning_effort.as_deref() {
        if !target.model.reasoning {
            return Err(unsupported("reasoning_effort", FAMILY, "this model does not reason."));
        }
        let level = match effort {
            "none" | "minimal" => "minimal",
            "low" => "low",
            "medium" => "medium",
            "high" | "xhigh" => "high",
            _ => {
                return Err(oai::invalid(
                    "reasoning_effort",
                    "'reasoning_effort' must be none, minimal, low, medium, high or xhigh.",
                ));
            }
        };
        config.thinking_config = Some(ThinkingConfig { thinking_level: level });
    }
    Ok(config)
}
