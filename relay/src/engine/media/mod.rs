//! SFU features as small sans-IO machines: each owns its state, is fed by the stage
//! that sees its input (`handle_*`), says when it next needs time (`poll_timeout`), and
//! is unit-tested with plain values and simulated time. The engine holds one per
//! session or stream where it needs it. See `docs/architecture.md`, "Adding a feature".

mod keyframe;
mod sender_report;

pub(crate) use keyframe::KeyframeThrottle;
pub(crate) use sender_report::LastSenderReport;
