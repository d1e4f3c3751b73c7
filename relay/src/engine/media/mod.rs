//! SFU features as small sans-IO machines: each owns its state, is fed by the stage
//! that sees its input (`handle_*`), says when it next needs time (`poll_timeout`) if
//! it has deadlines of its own, and is unit-tested with plain values and simulated
//! time. The engine holds one per session or stream where it needs it. See
//! `docs/architecture.md`, "Adding a feature".

mod budget;
pub mod bwe;
mod clamp;
mod estimate;
mod keyframe;
mod layers;
mod probe;
mod retransmit;
mod round_trip;
mod sender_report;
mod speaker;
mod twcc;
mod unwatched;
pub mod uplink;
mod uplink_queue;

pub(crate) use budget::Budget;
pub(crate) use clamp::{ClampConfig, RateClamp};
pub(crate) use estimate::{DownlinkEstimate, EstimateConfig, LossReport, RateMeter};
pub(crate) use keyframe::{KeyframeConfig, KeyframeThrottle};
pub(crate) use layers::{
    Judged, Layer, LayerChoice, LayerConfig, LayerEvent, PROSPECT_LAYER_SLACK, Phase,
};
pub(crate) use probe::{MAX_PACKET as MAX_PROBE_PACKET, ProbeOutcome, Prober};
pub(crate) use retransmit::{NackReply, RetransmitCache, RetransmitConfig};
pub(crate) use round_trip::RoundTrip;
pub(crate) use sender_report::LastSenderReport;
pub(crate) use speaker::{SpeakerConfig, SpeakerDetector};
pub(crate) use twcc::{MAX_PER_FEEDBACK as TWCC_MAX_PER_FEEDBACK, TwccRecorder};
pub(crate) use unwatched::{PauseAction, PauseAsk, UnwatchedLayer};
pub(crate) use uplink::{Limit, UplinkEstimate};
pub(crate) use uplink_queue::UplinkQueue;
