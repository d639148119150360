//! GGUF model headers (the model file is the operator's, so untrusted): the header parser,
//! the extent check and the tokenizer built from the metadata. Seeds: the headers of the
//! tiny test models (scripts/fuzz.sh cuts them from enclave/testdata/tiny).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouch_enclave::model::gguf_file::Content;
use vouch_enclave::model::GgufTokenizer;

fuzz_target!(|data: &[u8]| {
    let Ok(content) = Content::parse(data) else { return };
    let _ = content.check_extents(data.len() as u64);
    if let Ok(tokenizer) = GgufTokenizer::from_metadata(&content.metadata) {
        let _ = tokenizer.encode("Hello, <|im_start|> world 123");
    }
});
