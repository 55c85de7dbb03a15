//! A sidecar outboard from a mirror is untrusted: it must be refused unless
//! it is exactly the blob's tree, and whatever is accepted must verify the
//! real bytes and refuse flipped ones.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use p2pmodel_protocol::Outboard;

fuzz_target!(|bytes: Vec<u8>| {
    let blob = common::blob();
    let real = common::outboard(&blob);
    if let Ok(accepted) = Outboard::from_untrusted(real.hash(), common::SIZE, bytes.clone()) {
        assert_eq!(accepted.as_bytes(), real.as_bytes());
        accepted
            .verify_chunks(0, &blob)
            .expect("the real bytes verify");
    }
});
