//! [`LifecycleState`]: whether a node accepts work, and how it moves
//! between active and suspended.

use std::fmt;

use serde::Serialize;

/// Where a node is in its lifecycle. Only `Active` accepts operations
/// other than `suspend`, `resume` and `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleState {
    /// Accepting work; transfers move bytes.
    Active,
    /// `suspend` is closing connections; new work is already refused.
    Suspending,
    /// No network activity; transfers wait to continue.
    Suspended,
    /// `resume` is reopening; new work is still refused.
    Resuming,
}

impl fmt::Display for LifecycleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LifecycleState::Active => "active",
            LifecycleState::Suspending => "suspending",
            LifecycleState::Suspended => "suspended",
            LifecycleState::Resuming => "resuming",
        })
    }
}
