//! Bodies of the daemon's control API come from any local process: any
//! bytes must decode to a validated job request or an error with a stable
//! code, never a panic, and whatever decodes must survive a re-encode
//! unchanged (what the client sends is what the daemon queues).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmodel_control::{
    MAX_BODY, RequestError, decode_job_request, decode_limits, decode_position,
};

fuzz_target!(|bytes: &[u8]| {
    match decode_job_request(bytes) {
        Ok(request) => {
            assert!(bytes.len() <= MAX_BODY);
            let again =
                decode_job_request(&request.encode()).expect("a re-encoded request decodes");
            assert_eq!(again, request);
        }
        Err(error) => assert!(!error.code().is_empty()),
    }
    if let Ok(position) = decode_position(bytes) {
        assert!(position >= 1);
    }
    if let Ok(limits) = decode_limits(bytes) {
        assert_ne!(limits.max_concurrent, Some(0));
    }
    if bytes.len() > MAX_BODY {
        assert_eq!(decode_job_request(bytes), Err(RequestError::TooLarge));
    }
});
