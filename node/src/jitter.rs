//! Random spread for retry pauses, so that peers turned away together do
//! not come back together.

use std::time::Duration;

/// `pause` spread at random between half and one and a half of it.
pub(crate) fn jittered(pause: Duration) -> Duration {
    use std::hash::BuildHasher;
    let spread = std::collections::hash_map::RandomState::new().hash_one(pause) % 1000;
    pause / 2 + pause * spread as u32 / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jittered_pause_stays_within_half_and_one_and_a_half() {
        let pause = Duration::from_millis(200);
        for _ in 0..100 {
            let spread = jittered(pause);
            assert!(spread >= pause / 2 && spread < pause * 3 / 2, "{spread:?}");
        }
    }
}
