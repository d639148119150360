//! `vouch replay` on receipts signed by the TEST-ONLY simulated secure processor over
//! answers the real model produced (honest), or that were changed before signing (an
//! enclave that lies while still issuing receipts): the honest one MATCHes, the lie gets a
//! fraud proof that `--check` confirms, and a tampered proof, an unsigned change or a
//! format-2 receipt are refused with their reasons.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use base64::Engine;
use common::*;
use sha2::Digest;
use vouch_attestation::receipt::{
    token_ids_sha256, ReceiptLeaf, ReplaySpec, FORMAT_VERSION, SEED_FROM_REQUEST,
};
use vouch_client::receipts::ReceiptFile;
use vouch_enclave::model::{generate_blocking, GenerateRequest, Model};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn model_path() -> String {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "{} is missing: run scripts/fetch-model.sh", p.display());
    p.to_string_lossy().into_owned()
}

/// An answer as the enclave's API would make it: token ids, text, finish, and its leaf.
fn answer(model: &mut Model, body: &[u8]) -> (Vec<u32>, String, ReceiptLeaf) {
    answer_choice(model, body, 0)
}

/// [`answer`] for choice `choice` of the request's `n`.
fn answer_choice(model: &mut Model, body: &[u8], choice: u32) -> (Vec<u32>, String, ReceiptLeaf) {
    let mut parsed = vouch_enclave::request::parse_any_request(body).unwrap();
    parsed.params.controls.choice_index = choice;
    let req = GenerateRequest { prompt: parsed.prompt, params: parsed.params.clone() };
    let mut text = String::new();
    let (finish, stats) = generate_blocking(model, &req, |d| text.push_str(d)).unwrap();
    let id = model.replay_identity();
    let leaf = ReceiptLeaf {
        version: FORMAT_VERSION,
        request_sha256: sha2::Sha256::digest(body).to_vec(),
        output_sha256: sha2::Sha256::digest(text.as_bytes()).to_vec(),
        finish_reason: finish.as_str().into(),
        temperature: parsed.params.temperature,
        top_p: parsed.params.top_p,
        seed: parsed.params.seed,
        max_tokens: parsed.params.max_tokens,
        model_sha256: model.digest().to_vec(),
        prompt_tokens: stats.prompt_tokens,
        completion_tokens: stats.completion_tokens,
        response_id: "chatcmpl-replay".into(),
        replay: Some(ReplaySpec {
            engine: id.engine.into(),
            sampler: id.sampler.into(),
            seed_source: SEED_FROM_REQUEST.into(),
            tokenizer_sha256: id.tokenizer_sha256.to_vec(),
            chat_template: model.template_for(&req.prompt).unwrap().into(),
            prompt_tokens_sha256: token_ids_sha256(&stats.prompt_token_ids).to_vec(),
            output_tokens_sha256: token_ids_sha256(&stats.completion_token_ids).to_vec(),
            stop_token_ids: id.stop_token_ids.clone(),
        }),
        decoding: Some(parsed.params.controls.spec()),
        logprobs_sha256: parsed
            .params
            .controls
            .logprobs
            .map(|_| vouch_client::replay::logprobs_digest(model, &stats.logprobs).to_vec()),
        salt: Some(vec![6; 32]),
    };
    (stats.completion_token_ids, text, leaf)
}

#[test]
fn honest_answers_match_lies_get_a_proof_that_checks() {
    let sp = sim();
    let dir = tempfile::tempdir().unwrap();
    let (root, policy) = sim_trust_files(&sp, dir.path());
    let model_file = model_path();
    let mut model = Model::load(std::path::Path::new(&model_file)).unwrap();
    let write = |name: &str, leaf: &ReceiptLeaf, body: &[u8], text: &str, tokens: &[u32]| {
        let receipt = receipt_for_leaf(&sp, leaf, &[1; 32]);
        let f = ReceiptFile::new(&B64.encode(receipt), body, text, None, Some(tokens.to_vec()));
        let p = dir.path().join(name);
        std::fs::write(&p, serde_json::to_vec_pretty(&f).unwrap()).unwrap();
        p.to_string_lossy().into_owned()
    };
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--model", &model_file, "--trust-sim-root", &root, "--policy", &policy]);
        vouch(&all)
    };

    for (name, body) in [
        ("greedy", &br#"{"messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":48}"#[..]),
        (
            "sampled",
            br#"{"messages":[{"role":"user","content":"Write a haiku."}],"temperature":0.9,"top_p":0.95,"seed":77,"max_tokens":32}"#,
        ),
        // A raw-text prompt (POST /v1/completions): template text-vouch-1.
        ("completion", br#"{"prompt":"The capital of France is","max_tokens":24,"temperature":0.7,"seed":9}"#),
    ] {
        let (tokens, text, leaf) = answer(&mut model, body);
        let honest = write(&format!("{name}.json"), &leaf, body, &text, &tokens);
        let o = run(&["replay", &honest]);
        assert_eq!(code(&o), 0, "{name}: {}{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).starts_with("MATCH"), "{}", stdout(&o));

        // The lying enclave: one token changed after `at`, the receipt still signed.
        let at = tokens.len() / 2;
        let mut lie = tokens.clone();
        lie[at] = if lie[at] == 42 { 43 } else { 42 };
        let lie_text = model.tokenizer().decode(&lie);
        let mut lie_leaf = leaf.clone();
        lie_leaf.output_sha256 = sha2::Sha256::digest(lie_text.as_bytes()).to_vec();
        lie_leaf.replay.as_mut().unwrap().output_tokens_sha256 = token_ids_sha256(&lie).to_vec();
        let lying = write(&format!("{name}-lie.json"), &lie_leaf, body, &lie_text, &lie);
        let o = run(&["replay", &lying]);
        assert_eq!(code(&o), 3, "{name}: {}{}", stdout(&o), stderr(&o));
        assert!(stderr(&o).contains(&format!("MISMATCH: completion token {at}")), "{}", stderr(&o));
        let proof_path = format!("{lying}.fraud-proof.json");
        let proof: serde_json::Value = serde_json::from_slice(&std::fs::read(&proof_path).unwrap()).unwrap();
        assert_eq!(proof["position"], at);
        assert_eq!(proof["committed_token"], lie[at]);
        assert_eq!(proof["replayed_token"], tokens[at]);
        assert_eq!(proof["replayed_text"], text.as_str());
        let o = run(&["replay", "--check", &proof_path]);
        assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).starts_with("PROOF HOLDS"), "{}", stdout(&o));

        // A proof that misstates the divergence does not hold.
        let mut forged = proof.clone();
        forged["position"] = serde_json::json!(at + 1);
        let forged_path = dir.path().join(format!("{name}-forged.json"));
        std::fs::write(&forged_path, serde_json::to_vec(&forged).unwrap()).unwrap();
        let o = run(&["replay", "--check", forged_path.to_str().unwrap()]);
        assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
        assert!(stderr(&o).contains("the proof does NOT hold"), "{}", stderr(&o));

        // An honest proof against an honest receipt (the proof's receipt swapped): no.
        let mut swapped = proof.clone();
        let honest_file: serde_json::Value = serde_json::from_slice(&std::fs::read(&honest).unwrap()).unwrap();
        swapped["receipt_file"] = honest_file;
        let swapped_path = dir.path().join(format!("{name}-swapped.json"));
        std::fs::write(&swapped_path, serde_json::to_vec(&swapped).unwrap()).unwrap();
        assert_eq!(code(&run(&["replay", "--check", swapped_path.to_str().unwrap()])), 1);

        // A change nobody signed: the receipt does not verify, so there is nothing to prove.
        let f = ReceiptFile::new(
            &B64.encode(receipt_for_leaf(&sp, &leaf, &[1; 32])),
            body,
            &lie_text,
            None,
            Some(lie.clone()),
        );
        let unsigned = dir.path().join(format!("{name}-unsigned.json"));
        std::fs::write(&unsigned, serde_json::to_vec(&f).unwrap()).unwrap();
        let o = run(&["replay", unsigned.to_str().unwrap()]);
        assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
        assert!(stderr(&o).contains("the receipt does not verify, so it proves nothing"), "{}", stderr(&o));

        // Token ids that are not the committed ones.
        let mismatched = write(&format!("{name}-ids.json"), &leaf, body, &text, &lie);
        let o = run(&["replay", &mismatched]);
        assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
        assert!(stderr(&o).contains("not the ones the receipt commits"), "{}", stderr(&o));
    }

    // A format-2 receipt (no replay spec) verifies but cannot be replayed.
    let body = br#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":8}"#;
    let (tokens, text, leaf) = answer(&mut model, body);
    let old = ReceiptLeaf { version: 2, replay: None, decoding: None, salt: None, ..leaf.clone() };
    let old = write("format2.json", &old, body, &text, &tokens);
    let o = run(&["replay", &old]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("the receipt is format 2, which does not commit what a replay needs"),
        "{}",
        stderr(&o)
    );
    // A format-3 receipt (sampler 1, no decoding spec) still replays: MATCH.
    let mut v3 = ReceiptLeaf { version: 3, decoding: None, salt: None, ..leaf.clone() };
    v3.replay.as_mut().unwrap().sampler = "vouch-sampler-1".into();
    let v3 = write("format3.json", &v3, body, &text, &tokens);
    let o = run(&["replay", &v3]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("MATCH"), "{}", stdout(&o));
    // A format-4 receipt naming sampler 1 is refused (version 4 answers ran sampler 2).
    let mut v4_old_sampler = leaf.clone();
    v4_old_sampler.replay.as_mut().unwrap().sampler = "vouch-sampler-1".into();
    let f = write("format4-sampler1.json", &v4_old_sampler, body, &text, &tokens);
    let o = run(&["replay", &f]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("the receipt needs sampler \"vouch-sampler-1\""), "{}", stderr(&o));

    // A stopped, penalised, biased answer replays bit for bit; the same tokens under a
    // receipt committing another decoding spec than the body asks are refused.
    let body = br#"{"messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":48,"stop":["capital"],"frequency_penalty":0.5,"logit_bias":{"28":-3}}"#;
    let (tokens, text, leaf) = answer(&mut model, body);
    assert!(!text.contains("capital"), "{text}");
    let f = write("controls.json", &leaf, body, &text, &tokens);
    let o = run(&["replay", &f]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("MATCH"), "{}", stdout(&o));
    let mut misstated = leaf.clone();
    misstated.decoding.as_mut().unwrap().stop.clear();
    let f = write("controls-misstated.json", &misstated, body, &text, &tokens);
    let o = run(&["replay", &f]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("the receipt commits decoding"), "{}", stderr(&o));

    // A receipt whose template is not the request's kind (chat tokens committed for a
    // completions body), and one naming a template this build does not have: refused.
    let completion = br#"{"prompt":"What is the capital of France?","max_tokens":48}"#;
    let (c_tokens, c_text, c_leaf) = answer(&mut model, completion);
    let mut as_chat = c_leaf.clone();
    as_chat.replay.as_mut().unwrap().chat_template = "chatml-vouch-1".into();
    let f = write("template-kind.json", &as_chat, completion, &c_text, &c_tokens);
    let o = run(&["replay", &f]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(
            "the receipt commits template \"chatml-vouch-1\", but the request is one for \"text-vouch-1\""
        ),
        "{}",
        stderr(&o)
    );
    let mut unknown = c_leaf;
    unknown.replay.as_mut().unwrap().chat_template = "gemma-vouch-9".into();
    let f = write("template-unknown.json", &unknown, completion, &c_text, &c_tokens);
    let o = run(&["replay", &f]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("the receipt needs chat template \"gemma-vouch-9\""), "{}", stderr(&o));

    // A chat template this build has, but not the one this model file is served with.
    let mut other_template = leaf.clone();
    other_template.replay.as_mut().unwrap().chat_template = "gemma-vouch-1".into();
    let f = write("template-other.json", &other_template, body, &text, &tokens);
    let o = run(&["replay", &f]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(
            "the receipt commits template \"gemma-vouch-1\"; this model file is served with \"chatml-vouch-1\""
        ),
        "{}",
        stderr(&o)
    );

    // Another engine version than this build's.
    let mut other = leaf;
    other.replay.as_mut().unwrap().engine = "vouch-native-0".into();
    let other = write("engine.json", &other, body, &text, &tokens);
    let o = run(&["replay", &other]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("the receipt needs engine \"vouch-native-0\""), "{}", stderr(&o));
}

#[test]
fn a_constrained_answer_with_logprobs_replays_and_a_lie_about_its_logprobs_is_proven() {
    let sp = sim();
    let dir = tempfile::tempdir().unwrap();
    let (root, policy) = sim_trust_files(&sp, dir.path());
    let model_file = model_path();
    let mut model = Model::load(std::path::Path::new(&model_file)).unwrap();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--model", &model_file, "--trust-sim-root", &root, "--policy", &policy]);
        vouch(&all)
    };
    let write = |name: &str, leaf: &ReceiptLeaf, body: &[u8], text: &str, tokens: &[u32]| {
        let receipt = receipt_for_leaf(&sp, leaf, &[1; 32]);
        let f = ReceiptFile::new(&B64.encode(receipt), body, text, None, Some(tokens.to_vec()));
        let p = dir.path().join(name);
        std::fs::write(&p, serde_json::to_vec_pretty(&f).unwrap()).unwrap();
        p.to_string_lossy().into_owned()
    };
    // Choice 1 of 2, sampled, JSON-schema constrained, with log-probabilities.
    let body = br#"{"messages":[{"role":"user","content":"Name a city as JSON."}],"temperature":0.8,"seed":3,"n":2,"max_tokens":40,"logprobs":true,"top_logprobs":2,"response_format":{"type":"json_schema","json_schema":{"name":"city","schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}}"#;
    let (tokens, text, leaf) = answer_choice(&mut model, body, 1);
    let d = leaf.decoding.clone().unwrap();
    assert_eq!((d.n, d.choice_index, d.logprobs, d.response_format.as_str()), (2, 1, Some(2), "json_schema"));
    assert!(d.grammar_sha256.is_some() && leaf.logprobs_sha256.is_some());
    let honest = write("constrained.json", &leaf, body, &text, &tokens);
    let o = run(&["replay", &honest]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("MATCH"), "{}", stdout(&o));
    // The same tokens committed as choice 0: choice 0 draws from another stream.
    let mut as_first = leaf.clone();
    as_first.decoding.as_mut().unwrap().choice_index = 0;
    let o = run(&["replay", &write("as-first.json", &as_first, body, &text, &tokens)]);
    assert_eq!(code(&o), 3, "{}{}", stdout(&o), stderr(&o));
    // Every token right, the log-probabilities' digest not: a proof of that, which holds.
    let mut lie = leaf.clone();
    lie.logprobs_sha256 = Some(vec![7; 32]);
    let lying = write("logprobs-lie.json", &lie, body, &text, &tokens);
    let o = run(&["replay", &lying]);
    assert_eq!(code(&o), 3, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("log-probabilities are not the engine's"), "{}", stderr(&o));
    let proof_path = format!("{lying}.fraud-proof.json");
    let proof: serde_json::Value = serde_json::from_slice(&std::fs::read(&proof_path).unwrap()).unwrap();
    assert_eq!(proof["replayed_logprobs_sha256"], hex::encode(leaf.logprobs_sha256.as_ref().unwrap()));
    let o = run(&["replay", "--check", &proof_path]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // A Responses API answer (instructions, input items, text.format) replays the same way.
    let r_body = br#"{"instructions":"Answer in JSON.","input":[{"role":"user","content":[{"type":"input_text","text":"Name a city."}]}],"max_output_tokens":32,"text":{"format":{"type":"json_object"}}}"#;
    let (r_tokens, r_text, r_leaf) = answer_choice(&mut model, r_body, 0);
    let o = run(&["replay", &write("responses.json", &r_leaf, r_body, &r_text, &r_tokens)]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("MATCH"), "{}", stdout(&o));
    // The grammar the receipt commits must be the request's: a leaf naming another digest
    // cannot be replayed (the request asks for something else).
    let mut other = leaf.clone();
    other.decoding.as_mut().unwrap().grammar_sha256 = Some(vec![9; 32]);
    let o = run(&["replay", &write("other-grammar.json", &other, body, &text, &tokens)]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("the receipt commits decoding"), "{}", stderr(&o));
}
