//! Teacher-forced replay against the real default model: honest answers match (greedy and
//! seeded sampling, "stop" and "length" endings); a changed token, a changed ending or a
//! changed budget is found at the exact position, with both candidates and the honest
//! answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use vouch_enclave::model::{
    generate_blocking, replay, ChatMessage, FinishReason, GenerateRequest, Model, Prompt, ReplayOutcome,
    SamplingParams,
};

fn load() -> Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.exists(), "{} is missing: run scripts/fetch-model.sh", path.display());
    Model::load(&path).unwrap()
}

fn request(question: &str, temperature: f64, seed: u64, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        prompt: Prompt::Chat(vec![ChatMessage::new("user", question)]),
        params: SamplingParams {
            temperature,
            top_p: (temperature > 0.0).then_some(0.9),
            seed,
            ..SamplingParams::greedy(max_tokens)
        },
    }
}

fn answer(model: &mut Model, req: &GenerateRequest) -> (Vec<u32>, FinishReason, String) {
    let mut text = String::new();
    let (finish, stats) = generate_blocking(model, req, |d| text.push_str(d)).unwrap();
    (stats.completion_token_ids, finish, text)
}

#[test]
fn honest_answers_replay_and_every_change_is_caught_where_it_is() {
    let mut model = load();
    let cases = [
        request("What is the capital of France?", 0.0, 0, 64),
        request("Write a short poem about the sea.", 0.8, 1234, 40),
        request("Name a colour.", 1.0, 99, 200),
    ];
    for req in &cases {
        let (tokens, finish, text) = answer(&mut model, req);
        assert!(!tokens.is_empty());
        match replay(&mut model, req, &tokens, finish).unwrap() {
            ReplayOutcome::Match { prompt_tokens, .. } => assert!(!prompt_tokens.is_empty()),
            other => panic!("honest answer {text:?} did not replay: {other:?}"),
        }

        // One token changed, early and late.
        for at in [0, tokens.len() / 2, tokens.len() - 1] {
            let mut lie = tokens.clone();
            lie[at] = if lie[at] == 42 { 43 } else { 42 };
            let ReplayOutcome::Diverged(d) = replay(&mut model, req, &lie, finish).unwrap() else {
                panic!("a changed token at {at} replayed");
            };
            assert_eq!((d.position, d.committed, d.replayed), (at, Some(lie[at]), Some(tokens[at])));
            assert_eq!((d.replayed_tokens.as_slice(), d.replayed_finish), (tokens.as_slice(), finish));
            assert_eq!(d.replayed_text, text);
        }

        // The answer cut short, claiming either ending.
        let cut = &tokens[..tokens.len() - 1];
        for claimed in [FinishReason::Stop, FinishReason::Length] {
            let ReplayOutcome::Diverged(d) = replay(&mut model, req, cut, claimed).unwrap() else {
                panic!("a cut answer ({claimed:?}) replayed");
            };
            assert_eq!((d.position, d.committed, d.replayed), (cut.len(), None, Some(tokens[cut.len()])));
        }
        // The right tokens with the wrong ending.
        let wrong = if finish == FinishReason::Stop { FinishReason::Length } else { FinishReason::Stop };
        let ReplayOutcome::Diverged(d) = replay(&mut model, req, &tokens, wrong).unwrap() else {
            panic!("a wrong finish reason replayed");
        };
        assert_eq!((d.position, d.committed), (tokens.len(), None));
        // A token past the end.
        let mut longer = tokens.clone();
        longer.push(42);
        let ReplayOutcome::Diverged(d) = replay(&mut model, req, &longer, finish).unwrap() else {
            panic!("an extra token replayed");
        };
        assert_eq!((d.position, d.committed, d.replayed), (tokens.len(), Some(42), None));
    }
    // The same answer under another seed is a different answer.
    let (tokens, finish, _) = answer(&mut model, &cases[1]);
    let other_seed = request("Write a short poem about the sea.", 0.8, 1235, 40);
    assert!(matches!(replay(&mut model, &other_seed, &tokens, finish).unwrap(), ReplayOutcome::Diverged(_)));
}

#[test]
fn stop_strings_penalties_and_bias_are_applied_and_replay_bit_for_bit() {
    use vouch_enclave::model::DecodingControls;
    let mut model = load();
    let plain = request("What is the capital of France?", 0.0, 0, 48);
    let (plain_ids, _, plain_text) = answer(&mut model, &plain);
    let with = |c: DecodingControls| GenerateRequest {
        params: SamplingParams { controls: c, ..plain.params.clone() },
        ..plain.clone()
    };

    // A stop string taken from the middle of the plain answer: the text ends just before
    // it, no delta ever shows it, and the tokens are the plain answer's up to the cut.
    let word = plain_text.split_whitespace().nth(3).expect("a plain answer of four words").to_owned();
    let cut_at = plain_text.find(&word).unwrap();
    let stopped = with(DecodingControls { stop: vec![word.clone()], ..DecodingControls::default() });
    let mut deltas = Vec::new();
    let (finish, stats) = generate_blocking(&mut model, &stopped, |d| deltas.push(d.to_owned())).unwrap();
    let text = deltas.concat();
    assert_eq!((finish, text.as_str()), (FinishReason::Stop, &plain_text[..cut_at]), "stop {word:?}");
    assert!(deltas.iter().all(|d| !d.contains(&word)));
    let ids = stats.completion_token_ids;
    assert!(ids.len() < plain_ids.len() && plain_ids.starts_with(&ids));
    assert!(matches!(
        replay(&mut model, &stopped, &ids, FinishReason::Stop).unwrap(),
        ReplayOutcome::Match { .. }
    ));
    // Claiming it went on past the stop string, or ended on the budget: caught.
    let ReplayOutcome::Diverged(d) =
        replay(&mut model, &stopped, &plain_ids[..ids.len() + 1], FinishReason::Stop).unwrap()
    else {
        panic!("an answer running past its stop string replayed");
    };
    assert_eq!((d.position, d.committed, d.replayed), (ids.len(), Some(plain_ids[ids.len()]), None));
    assert!(matches!(
        replay(&mut model, &stopped, &ids, FinishReason::Length).unwrap(),
        ReplayOutcome::Diverged(_)
    ));
    // The same ids under the request without the stop string: not its answer.
    assert!(matches!(
        replay(&mut model, &plain, &ids, FinishReason::Stop).unwrap(),
        ReplayOutcome::Diverged(_)
    ));

    // A frequency penalty changes the greedy answer; its replay matches, and the plain
    // request's replay of it does not.
    let penalised = with(DecodingControls {
        frequency_penalty: 2.0,
        presence_penalty: 1.0,
        ..DecodingControls::default()
    });
    let (p_ids, p_finish, _) = answer(&mut model, &penalised);
    assert_ne!(p_ids, plain_ids, "penalties changed nothing");
    assert!(matches!(replay(&mut model, &penalised, &p_ids, p_finish).unwrap(), ReplayOutcome::Match { .. }));
    assert!(matches!(replay(&mut model, &plain, &p_ids, p_finish).unwrap(), ReplayOutcome::Diverged(_)));

    // A bias of -100 on the plain answer's first token: never chosen first; replays.
    let biased =
        with(DecodingControls { logit_bias: vec![(plain_ids[0], -100.0)], ..DecodingControls::default() });
    let (b_ids, b_finish, _) = answer(&mut model, &biased);
    assert_ne!(b_ids[0], plain_ids[0]);
    assert!(matches!(replay(&mut model, &biased, &b_ids, b_finish).unwrap(), ReplayOutcome::Match { .. }));
    // Sampled, with all three at once: same seed, same answer, and it replays.
    let all = GenerateRequest {
        params: SamplingParams {
            temperature: 0.9,
            seed: 7,
            controls: DecodingControls {
                stop: vec!["\n".into()],
                presence_penalty: 0.5,
                frequency_penalty: 0.5,
                logit_bias: vec![(plain_ids[1], 5.0)],
                ..DecodingControls::default()
            },
            ..plain.params.clone()
        },
        ..plain.clone()
    };
    let (a_ids, a_finish, a_text) = answer(&mut model, &all);
    assert!(!a_text.contains('\n'));
    assert_eq!(answer(&mut model, &all).0, a_ids);
    assert!(matches!(replay(&mut model, &all, &a_ids, a_finish).unwrap(), ReplayOutcome::Match { .. }));
    // A bias naming no token of the vocabulary is refused, not ignored.
    let outside = with(DecodingControls { logit_bias: vec![(1 << 30, 1.0)], ..DecodingControls::default() });
    let e = generate_blocking(&mut model, &outside, |_| {}).unwrap_err().to_string();
    assert!(e.contains("not in the vocabulary"), "{e}");
}

#[test]
fn logprobs_and_other_choices_replay_bit_for_bit() {
    let mut model = load();
    let mut req = request("Write a short poem about the sea.", 0.9, 77, 24);
    req.params.controls.logprobs = Some(5);
    req.params.controls.n = 3;
    let mut generated = Vec::new();
    for i in 0..3 {
        req.params.controls.choice_index = i;
        let mut text = String::new();
        let (finish, stats) = generate_blocking(&mut model, &req, |d| text.push_str(d)).unwrap();
        // One entry per completion token, the chosen token first among equals or below the
        // likeliest, 5 alternatives in order, probabilities that add up to at most 1.
        assert_eq!(stats.logprobs.len(), stats.completion_token_ids.len());
        for (lp, &id) in stats.logprobs.iter().zip(&stats.completion_token_ids) {
            assert_eq!(lp.id, id);
            assert_eq!(lp.top.len(), 5);
            assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
            assert!(lp.logprob <= lp.top[0].1 && lp.logprob < 0.0);
            assert!(lp.top.iter().map(|t| t.1.exp()).sum::<f64>() <= 1.0 + 1e-9);
        }
        // Replayed teacher-forced: the same tokens and the same log-probabilities, to the bit.
        match replay(&mut model, &req, &stats.completion_token_ids, finish).unwrap() {
            ReplayOutcome::Match { logprobs, .. } => assert_eq!(logprobs, stats.logprobs, "choice {i}"),
            other => panic!("choice {i} did not replay: {other:?}"),
        }
        generated.push(stats.completion_token_ids);
    }
    // Choice 0 is the single answer's stream; the others draw from streams of their own.
    req.params.controls = vouch_enclave::model::DecodingControls::default();
    let (single, _, _) = answer(&mut model, &req);
    assert_eq!(generated[0], single);
    assert!(generated[1] != generated[0] || generated[2] != generated[0], "{generated:?}");
    // Choice 1's tokens are not choice 2's answer (a replay under the wrong index diverges).
    let mut wrong = req.clone();
    wrong.params.controls.n = 3;
    wrong.params.controls.choice_index = 2;
    if generated[1] != generated[2] {
        let finish = if generated[1].len() == 24 { FinishReason::Length } else { FinishReason::Stop };
        assert!(matches!(
            replay(&mut model, &wrong, &generated[1], finish).unwrap(),
            ReplayOutcome::Diverged(_)
        ));
    }
}

#[test]
fn json_schema_output_is_valid_json_of_the_schema_and_replays() {
    use vouch_enclave::model::constraint::OutputFormat;
    let mut model = load();
    let started = std::time::Instant::now();
    model.grammars().unwrap();
    println!("grammar index over the vocabulary: {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"country": {"type": "string"}, "capital": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["country", "capital", "population"],
        "additionalProperties": false,
    });
    for (temperature, seed) in [(0.0, 0), (0.9, 5)] {
        let mut req = request("Give the capital of France as JSON.", temperature, seed, 96);
        req.params.controls.response_format = Some(OutputFormat::json_schema(schema.clone()));
        let t = std::time::Instant::now();
        let (ids, finish, text) = answer(&mut model, &req);
        let constrained = ids.len() as f64 / t.elapsed().as_secs_f64();
        assert_eq!(finish, FinishReason::Stop, "{text:?}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let o = v.as_object().unwrap();
        let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["capital", "country", "population"], "{text}");
        assert!(o["country"].is_string() && o["capital"].is_string() && o["population"].is_i64(), "{text}");
        assert!(matches!(replay(&mut model, &req, &ids, finish).unwrap(), ReplayOutcome::Match { .. }));
        // Unconstrained, the same request answers in prose.
        req.params.controls.response_format = None;
        let t = std::time::Instant::now();
        let (prose_ids, _, prose) = answer(&mut model, &req);
        // Informational (not asserted: timings belong in benchmarks).
        println!(
            "temperature {temperature}: constrained {constrained:.0} tok/s ({} tokens), unconstrained {:.0} tok/s ({} tokens)",
            ids.len(),
            prose_ids.len() as f64 / t.elapsed().as_secs_f64(),
            prose_ids.len()
        );
        assert!(serde_json::from_str::<serde_json::Value>(&prose).is_err(), "{prose:?}");
    }
    // Constrained, stopped and penalised at once (and biased, sampled): bit for bit.
    let mut req = request("List three cities in France as JSON.", 0.7, 11, 96);
    req.params.controls.response_format = Some(OutputFormat::json_schema(serde_json::json!({
        "type": "object", "properties": {"cities": {"type": "array", "items": {"type": "string"}}}, "required": ["cities"]})));
    req.params.controls.stop = vec!["Lyon".into(), "\n\n".into()];
    req.params.controls.presence_penalty = 0.8;
    req.params.controls.frequency_penalty = 0.4;
    req.params.controls.logit_bias = vec![(28, -5.0)];
    let (ids, finish, text) = answer(&mut model, &req);
    assert!(text.starts_with('{') && !text.contains("Lyon"), "{text:?}");
    assert!(
        matches!(replay(&mut model, &req, &ids, finish).unwrap(), ReplayOutcome::Match { .. }),
        "{text:?}"
    );
    let mut lie = ids.clone();
    let at = lie.len() / 2;
    lie[at] = if lie[at] == 42 { 43 } else { 42 };
    let ReplayOutcome::Diverged(d) = replay(&mut model, &req, &lie, finish).unwrap() else {
        panic!("a lie replayed")
    };
    assert_eq!(d.position, at);
    // json_object: any JSON object.
    let mut req = request("Describe a cat in JSON.", 0.0, 0, 96);
    req.params.controls.response_format = Some(OutputFormat::json_object());
    let (ids, finish, text) = answer(&mut model, &req);
    if finish == FinishReason::Stop {
        assert!(serde_json::from_str::<serde_json::Value>(&text).unwrap().is_object(), "{text}");
    } else {
        assert!(text.starts_with('{'), "{text}");
    }
    assert!(matches!(replay(&mut model, &req, &ids, finish).unwrap(), ReplayOutcome::Match { .. }));
    // A schema the grammar compiler refuses is a request error naming response_format.
    req.params.controls.response_format =
        Some(OutputFormat::json_schema(serde_json::json!({"type": "frobnicate"})));
    let e = generate_blocking(&mut model, &req, |_| {}).unwrap_err().to_string();
    assert!(e.contains("response_format"), "{e}");
}

#[test]
fn tool_calls_follow_the_function_schema_and_replay() {
    use vouch_enclave::model::tools::parse_tool_calls;
    let mut model = load();
    let tools = r#""tools":[{"type":"function","function":{"name":"get_weather","description":"Current weather in a city","parameters":{"type":"object","properties":{"city":{"type":"string"},"unit":{"enum":["celsius","fahrenheit"]}},"required":["city","unit"],"additionalProperties":false}}},{"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{"zone":{"type":"string"}},"required":["zone"]}}}]"#;
    let ask = |extra: &str| {
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"What is the weather in Paris?"}}],"max_tokens":80,{tools}{extra}}}"#
        );
        let parsed = vouch_enclave::request::parse_chat_request(body.as_bytes()).unwrap();
        GenerateRequest { prompt: parsed.prompt, params: parsed.params }
    };
    for (extra, want) in [
        (r#","tool_choice":"required","parallel_tool_calls":false"#, None),
        (r#","tool_choice":{"type":"function","function":{"name":"get_time"}}"#, Some("get_time")),
    ] {
        let req = ask(extra);
        // The tools are in the system turn.
        assert!(
            req.prompt.messages()[0].role == "system"
                && req.prompt.messages()[0].content.contains("<tools>\n")
        );
        let (ids, finish, text) = answer(&mut model, &req);
        assert_eq!(finish, FinishReason::Stop, "{text:?}");
        let calls = parse_tool_calls(&text).unwrap_or_else(|| panic!("not calls: {text:?}"));
        // parallel_tool_calls false: exactly one call; a named function: only it.
        assert!(if want.is_none() { calls.len() == 1 } else { !calls.is_empty() }, "{text}");
        for call in &calls {
            if let Some(name) = want {
                assert_eq!(call.name, name);
            }
            let args: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
            match call.name.as_str() {
                "get_weather" => {
                    assert!(args["city"].is_string(), "{text}");
                    assert!(["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()), "{text}");
                }
                "get_time" => assert!(args["zone"].is_string(), "{text}"),
                other => panic!("called {other}"),
            }
        }
        assert!(matches!(replay(&mut model, &req, &ids, finish).unwrap(), ReplayOutcome::Match { .. }));
    }
    // auto: text that does not open with "<", or calls; either way it replays.
    let req = ask("");
    let (ids, finish, text) = answer(&mut model, &req);
    assert!(parse_tool_calls(&text).is_some() || !text.starts_with('<'), "{text:?}");
    assert!(matches!(replay(&mut model, &req, &ids, finish).unwrap(), ReplayOutcome::Match { .. }));
    // A conversation with an earlier call and its result: rendered in the convention.
    let body = format!(
        r#"{{"messages":[{{"role":"user","content":"Weather in Paris?"}},{{"role":"assistant","content":null,"tool_calls":[{{"id":"c1","type":"function","function":{{"name":"get_weather","arguments":"{{\"city\":\"Paris\",\"unit\":\"celsius\"}}"}}}}]}},{{"role":"tool","tool_call_id":"c1","content":"21 degrees, sunny"}}],"max_tokens":24,"tool_choice":"none",{tools}}}"#
    );
    let parsed = vouch_enclave::request::parse_chat_request(body.as_bytes()).unwrap();
    let m = parsed.messages();
    assert_eq!(m.len(), 3, "tool_choice none: the tools are not shown, no system turn added");
    assert!(m[1].content.starts_with("<tool_call>\n{") && m[1].content.contains(r#""city":"Paris""#));
    assert_eq!(
        (m[2].role.as_str(), m[2].content.as_str()),
        ("user", "<tool_response>\n21 degrees, sunny\n</tool_response>")
    );
    assert!(parsed.params.controls.spec().tools_sha256.is_some());
}
