//! Teacher-forced replay against the real default model: honest answers match (greedy and
//! seeded sampling, "stop" and "length" endings); a changed token, a changed ending or a
//! changed budget is found at the exact position, with both candidates and the honest
//! answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use vouch_enclave::model::{
    generate_blocking, replay, ChatMessage, FinishReason, GenerateRequest, Model, ReplayOutcome,
    SamplingParams,
};

fn load() -> Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.exists(), "{} is missing: run scripts/fetch-model.sh", path.display());
    Model::load(&path).unwrap()
}

fn request(question: &str, temperature: f64, seed: u64, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        messages: vec![ChatMessage::new("user", question)],
        params: SamplingParams { temperature, top_p: (temperature > 0.0).then_some(0.9), seed, max_tokens },
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
            ReplayOutcome::Match { prompt_tokens } => assert!(!prompt_tokens.is_empty()),
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
