//! The official OpenAI Python SDK talks to `vouch proxy`, which forwards only to an
//! enclave it verified and adds its verdict. The interpreter is `VOUCH_PYTHON`, else
//! `python3`; scripts/test.sh installs the SDK into a venv it owns and exports
//! `VOUCH_PYTHON` pointing there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::process::Command;
use vouch_e2e::*;

/// The interpreter that has the SDK. Checked before anything starts, so a missing SDK
/// is one sentence saying what to do, not a `ModuleNotFoundError` traceback.
fn python_with_openai() -> String {
    let python = std::env::var("VOUCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python).args(["-c", "import openai"]).output();
    let ok = probe.as_ref().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the OpenAI Python SDK is not available to `{python}`: run scripts/test.sh (it creates \
         <repo>/.venv-test with `openai` and exports VOUCH_PYTHON), or set VOUCH_PYTHON to a \
         python that has it"
    );
    python
}

/// An enclave behind vouch-host behind `vouch proxy`; the processes (dropped last) and the
/// proxy's address.
fn proxy_chain(sim: &std::path::Path) -> (Vec<Proc>, String) {
    proxy_chain_model(sim, &model())
}

/// [`proxy_chain`] with the enclave serving `model`.
fn proxy_chain_model(sim: &std::path::Path, model: &std::path::Path) -> (Vec<Proc>, String) {
    let (enclave, enclave_addr) = start_enclave_model(sim, model, &[], &[]);
    let (host, host_addr) = start_host(&[&enclave_addr]);
    let (proxy, addr) = start_proxy(&host_addr, sim, &[]);
    (vec![proxy, host, enclave], addr)
}

/// Runs `tests/python/SCRIPT BASE_URL` and returns its JSON line.
fn run_check(python: &str, script: &str, addr: &str) -> serde_json::Value {
    let script = repo().join("tests/python").join(script);
    let out = Command::new(python).arg(&script).arg(format!("http://{addr}/v1")).output().expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed:\n{stdout}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn langchain_through_the_verifying_proxy() {
    let python = python_with_openai();
    let probe = Command::new(&python).args(["-c", "import langchain_openai"]).output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "langchain-openai is not available to `{python}`: run scripts/test.sh (it installs it into <repo>/.venv-test)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (_procs, addr) = proxy_chain(&tmp.path().join("sim"));
    let v = run_check(&python, "langchain_check.py", &addr);
    // invoke and stream: the same verified answer.
    assert!(v["invoke"]["text"].as_str().unwrap().contains("Berlin"), "{v}");
    assert_eq!(v["invoke"]["text"], v["stream"]["text"], "{v}");
    assert!(v["stream"]["chunks"].as_u64().unwrap() > 2, "{v}");
    // with_structured_output: parsed into the schema.
    let parsed = &v["structured"]["parsed"];
    assert!(parsed["country"].is_string() && parsed["capital"].is_string(), "{v}");
    assert_eq!(v["structured"]["error"], serde_json::Value::Null, "{v}");
    // bind_tools: a call of the bound tool with its argument.
    let calls = v["tools"]["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{v}");
    assert_eq!(calls[0]["name"], "get_weather", "{v}");
    assert!(calls[0]["args"]["city"].is_string(), "{v}");
}

#[test]
fn openai_sdk_through_the_verifying_proxy() {
    let python = python_with_openai();
    let tmp = tempfile::tempdir().unwrap();
    let (_procs, addr) = proxy_chain(&tmp.path().join("sim"));
    let v = run_check(&python, "openai_sdk_check.py", &addr);
    assert!(v["text"].as_str().unwrap().contains("Berlin"), "{v}");
    assert_eq!(v["text"], v["stream_text"], "{v}");
    // Applied controls, each with its effect, plain and streamed (same answer both ways).
    let applied = &v["applied"];
    for mode in ["plain", "stream"] {
        let stop = &applied[format!("stop/{mode}")];
        let stopped = stop[0].as_str().unwrap();
        assert!(!stopped.contains("Berlin") && !stopped.is_empty(), "{mode}: {v}");
        assert!(v["text"].as_str().unwrap().starts_with(stopped), "{mode}: {v}");
        assert_eq!(
            (&stop[1], &stop[2]),
            (&serde_json::json!("stop"), &serde_json::json!(true)),
            "{mode}: {v}"
        );
        let (penalised, plain) =
            (&applied[format!("penalties/{mode}")], &applied[format!("no_penalties/{mode}")]);
        assert_ne!(penalised[0], plain[0], "penalties changed nothing: {v}");
        assert_eq!((&penalised[2], &plain[2]), (&serde_json::json!(true), &serde_json::json!(true)), "{v}");
        let biased = &applied[format!("logit_bias/{mode}")];
        let text = biased[0].as_str().unwrap();
        let quarter = &text[..text.len() / 4];
        assert!(
            !quarter.is_empty() && quarter.repeat(4) == text,
            "logit_bias +100: one token four times: {v}"
        );
        assert_eq!(biased[2], true, "{v}");
    }
    assert_eq!(applied["stop/plain"], applied["stop/stream"], "{v}");
    for mode in ["plain", "stream"] {
        assert_eq!(applied[format!("max_completion_tokens/{mode}")], json!(["length", 3]), "{v}");
    }
    // logprobs: one entry per completion token, spelling the text, ordered alternatives,
    // the greedy pick the likeliest; the same plain and streamed; verified (the proxy
    // checks them against the receipt's digest).
    let lp = &applied["logprobs/plain"];
    assert!(lp["entries"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(
        (&lp["spells"], &lp["ordered"], &lp["verified"]),
        (&json!(true), &json!(true), &json!(true)),
        "{v}"
    );
    assert_eq!(lp["entries"], applied["logprobs/plain"]["tokens"], "{v}");
    assert_eq!(applied["logprobs/plain"], applied["logprobs/stream"], "{v}");
    // n = 3: three choices, each its own receipt, all verified; greedy ones agree, sampled
    // ones (streams 0, 1, 2 of one seed) do not all agree.
    for kind in ["n/greedy", "n/sampled"] {
        let c = &applied[kind];
        assert_eq!(
            (&c["indexes"], &c["receipts"], &c["verified"]),
            (&json!([0, 1, 2]), &json!(3), &json!(true)),
            "{kind}: {v}"
        );
    }
    let greedy = applied["n/greedy"]["texts"].as_array().unwrap();
    assert!(greedy.iter().all(|t| t == &greedy[0]), "{v}");
    // Structured output: valid JSON, of the schema (exactly its two string fields), ended
    // by the model (finish stop), verified; the same plain and streamed. A bad schema: 400.
    for mode in ["plain", "stream"] {
        let (parsed, finish, verified) = (
            &applied[format!("json_schema/{mode}")][0],
            &applied[format!("json_schema/{mode}")][1],
            &applied[format!("json_schema/{mode}")][2],
        );
        let o = parsed.as_object().unwrap_or_else(|| panic!("json_schema/{mode} is not a JSON object: {v}"));
        let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["capital", "country"], "{v}");
        assert!(o.values().all(serde_json::Value::is_string), "{v}");
        assert_eq!((finish, verified), (&json!("stop"), &json!(true)), "{v}");
        let object = &applied[format!("json_object/{mode}")];
        assert!(object[0].is_object(), "json_object/{mode}: {v}");
        assert_eq!(object[2], true, "{v}");
    }
    assert_eq!(applied["json_schema/plain"], applied["json_schema/stream"], "{v}");
    assert_eq!(applied["json_schema/bad"], json!([400, "invalid_value", "response_format"]), "{v}");
    // Tools, tool_choice required: one call or more of get_weather, arguments of its
    // schema, finish tool_calls, verified (the proxy re-derives the calls from the verified
    // output); the same plain and streamed. With the result sent back: a text answer.
    for mode in ["plain", "stream"] {
        let t = &applied[format!("tools/{mode}")];
        let calls = t[0].as_array().unwrap();
        assert!(!calls.is_empty(), "{v}");
        for c in calls {
            assert_eq!((&c[0], &c[2]), (&json!("get_weather"), &json!(true)), "{v}");
            assert!(
                c[1]["city"].is_string()
                    && ["celsius", "fahrenheit"].contains(&c[1]["unit"].as_str().unwrap()),
                "{v}"
            );
        }
        assert_eq!((&t[1], &t[2]), (&json!("tool_calls"), &json!(true)), "{v}");
    }
    assert_eq!(applied["tools/plain"], applied["tools/stream"], "{v}");
    let result = &applied["tools/result"];
    assert!(result[0].as_str().is_some_and(|t| !t.is_empty()) && result[2] == true, "{v}");
    // POST /v1/responses: the same answer plain and streamed (with the Responses event
    // types), a tool call of the schema, structured output; all verified; refusals name
    // the field.
    let r = &applied["responses"];
    assert!(r["plain"][0].as_str().unwrap().contains("Berlin"), "{v}");
    assert_eq!((&r["plain"][1], &r["plain"][2]), (&json!("completed"), &json!(true)), "{v}");
    assert_eq!(
        (&r["stream"][0], &r["stream"][1], &r["stream"][2]),
        (&r["plain"][0], &r["plain"][0], &json!(true)),
        "{v}"
    );
    for kind in
        ["response.created", "response.output_text.delta", "response.output_item.done", "response.completed"]
    {
        assert!(r["stream"][3].as_array().unwrap().contains(&json!(kind)), "{kind}: {v}");
    }
    assert_eq!(r["tools"][0][0][0], "get_weather", "{v}");
    assert!(r["tools"][0][0][1]["city"].is_string() && r["tools"][1] == true, "{v}");
    assert!(r["structured"][0]["capital"].is_string() && r["structured"][1] == true, "{v}");
    assert_eq!(r["refused"], json!([400, "unsupported_parameter", "previous_response_id"]), "{v}");
    let sampled = applied["n/sampled"]["texts"].as_array().unwrap();
    assert!(sampled.iter().any(|t| t != &sampled[0]), "{v}");
    // Every parameter not applied is refused with OpenAI's 400, naming it, streamed or not.
    let refused = v["refused"].as_object().unwrap();
    assert_eq!(refused.len(), 7, "{v}");
    for (case, got) in refused {
        let param = case.split('/').next().unwrap();
        assert_eq!(
            got,
            &serde_json::json!([400, "unsupported_parameter", param, "invalid_request_error"]),
            "{case}: {v}"
        );
    }
    assert_eq!(v["defaults_ok"], true, "{v}");
    // stream_options.include_usage: one usage chunk, last, with no choices and the verdict.
    let usage = &v["include_usage"];
    assert_eq!(usage["finish_reasons"], serde_json::json!(["stop"]), "{v}");
    let chunks = usage["usage_chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 1, "{v}");
    assert_eq!(chunks[0]["choices"], 0, "{v}");
    assert_eq!(chunks[0]["verified"], true, "{v}");
    assert!(chunks[0]["completion_tokens"].as_u64().unwrap() > 0, "{v}");
    for key in ["verdict", "stream_verdict"] {
        let verdict = &v[key];
        assert_eq!(verdict["verified"], serde_json::json!(true), "{key}: {v}");
        assert!(verdict.to_string().to_lowercase().contains("simulated"), "{key}: {v}");
    }
}

/// The legacy completions API (`client.completions.create`) through the proxy: a raw-text
/// prompt answered plain, streamed (with and without `include_usage`) and with `n` sampled
/// choices, each verified; its refusals name the parameter. Against SmolLM2 (which also
/// chats) and Gemma 3 270M, a base model served on completions only: its chat requests are
/// refused with `no_chat_template`.
#[test]
fn openai_sdk_completions_through_the_verifying_proxy() {
    let python = python_with_openai();
    let tmp = tempfile::tempdir().unwrap();
    let mut models = vec![("smollm2", model())];
    models.extend(gemma_model().map(|g| ("gemma3", g)));
    for (name, path) in models {
        let (_procs, addr) = proxy_chain_model(&tmp.path().join(format!("sim-{name}")), &path);
        let v = run_check(&python, "openai_completions_check.py", &addr);
        eprintln!("{name}: {v}");
        let text = v["plain"]["text"].as_str().unwrap();
        assert!(!text.is_empty(), "{name}: {v}");
        assert_eq!(
            (&v["plain"]["finish"], &v["plain"]["verified"]),
            (&json!("length"), &json!(true)),
            "{name}: {v}"
        );
        assert_eq!(v["plain"]["completion_tokens"], 8, "{name}: {v}");
        assert_eq!(v["plain"]["object"], "text_completion", "{name}: {v}");
        // Streamed: the same text, in several pieces, the verdict on the last chunk.
        assert_eq!(v["stream"]["text"], v["plain"]["text"], "{name}: {v}");
        assert!(v["stream"]["pieces"].as_u64().unwrap() >= 2, "{name}: {v}");
        assert_eq!(
            (&v["stream"]["finish"], &v["stream"]["verified"]),
            (&json!("length"), &json!(true)),
            "{name}: {v}"
        );
        let usage = &v["include_usage"];
        assert_eq!(usage["text"], v["plain"]["text"], "{name}: {v}");
        assert_eq!(usage["usage_chunks"], json!([[0, 8, true]]), "{name}: {v}");
        // The default budget is OpenAI's 16 tokens.
        assert_eq!(
            (&v["default_budget"][0], &v["default_budget"][1]),
            (&json!(true), &json!(true)),
            "{name}: {v}"
        );
        // n = 2 sampled: two choices, each with its own receipt, both verified.
        assert_eq!(v["n"], json!([[0, 1], 2, true]), "{name}: {v}");
        for (param, got) in v["refused"].as_object().unwrap() {
            assert_eq!(got, &json!([400, "unsupported_parameter", param]), "{name}: {v}");
        }
        assert_eq!(v["refused"].as_object().unwrap().len(), 5, "{name}: {v}");
        let chat = &v["chat"];
        if name == "gemma3" {
            assert_eq!(chat, &json!([400, "no_chat_template", "messages"]), "{name}: {v}");
        } else {
            assert_eq!(chat, &json!("answered"), "{name}: {v}");
        }
    }
}
