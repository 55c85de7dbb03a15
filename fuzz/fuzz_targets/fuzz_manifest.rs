//! Manifests arrive from peers and mirrors: any bytes must decode to a
//! checked manifest or an error, never a panic, and whatever decodes must
//! re-encode to the same bytes (one model, one hash).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmodel_protocol::Manifest;
use p2pmodel_protocol::manifest::check_path;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(manifest) = Manifest::decode(bytes) {
        assert_eq!(manifest.encode(), bytes);
        for file in manifest.files() {
            assert!(check_path(&file.path).is_ok());
        }
    }
});
