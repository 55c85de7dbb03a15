//! Runs turned into figures: a [`Summary`] per run (JSON and a table) and
//! an SVG plot of when the leechers finished, beside the fluid bound.
//!
//! The plot is a few lines of SVG written here: a charting crate would
//! bring a font stack to draw two axes and some lines.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::run::RunResult;
use crate::scenario::Distribution;

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The scenario's name.
    pub scenario: String,
    /// `swarm` or `http`.
    pub distribution: &'static str,
    /// Leechers.
    pub leechers: usize,
    /// The blob's size in bytes.
    pub blob_bytes: u64,
    /// Leechers that ended with the right file.
    pub correct: usize,
    /// Leechers that crashed on the way.
    pub crashed: usize,
    /// Seconds from the start until the last leecher finished; `None` if
    /// one did not.
    pub time_to_all_secs: Option<f64>,
    /// The fluid lower bound of that time, in seconds.
    pub fluid_bound_secs: f64,
    /// Bound over time: 1 is the ideal, 0.5 twice as slow.
    pub bound_ratio: Option<f64>,
    /// Median time a leecher took from its start to its file, in seconds.
    pub p50_secs: Option<f64>,
    /// 95th percentile of the same.
    pub p95_secs: Option<f64>,
    /// 99th percentile of the same.
    pub p99_secs: Option<f64>,
    /// Bytes the seed (or origin) sent, in copies of the blob.
    pub seed_upload_copies: f64,
    /// Share of the leechers' verified bytes that came from the seed (or
    /// origin) rather than from each other.
    pub from_seed_share: f64,
    /// Bytes delivered to leechers beyond one copy each: duplicates and
    /// protocol overhead (bao proofs, framing, encryption, requests).
    pub redundant_bytes: u64,
    /// The same, as a share of one copy per leecher.
    pub redundant_share: f64,
    /// Wall-clock seconds the run took on this machine.
    pub wall_secs: f64,
    /// Why leechers failed, each reason once.
    pub errors: Vec<String>,
}

impl Summary {
    /// The figures of `run`.
    pub fn of(run: &RunResult) -> Self {
        let scenario = &run.scenario;
        let size = scenario.blob_size;
        let leechers = run.leechers.len();
        let correct = run.leechers.iter().filter(|l| l.correct).count();
        let time_to_all = (correct == leechers)
            .then(|| run.leechers.iter().filter_map(|l| l.finished()).max())
            .flatten()
            .map(|time| time.as_secs_f64());
        let bound = scenario.fluid_bound().as_secs_f64();
        let mut took: Vec<Option<f64>> = run
            .leechers
            .iter()
            .map(|l| l.took.filter(|_| l.correct).map(|t| t.as_secs_f64()))
            .collect();
        took.sort_by(|a, b| match (a, b) {
            (Some(a), Some(b)) => a.total_cmp(b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        let percentile = |p: f64| {
            let rank = ((p * took.len() as f64).ceil() as usize).clamp(1, took.len().max(1));
            took.get(rank - 1).copied().flatten()
        };
        let (distribution, delivered) = match scenario.distribution {
            Distribution::Swarm { .. } => (
                "swarm",
                run.leechers.iter().map(|l| l.traffic.received).sum::<u64>(),
            ),
            Distribution::Http => ("http", run.seed_sent),
        };
        let copies = leechers as u64 * size;
        let redundant = delivered.saturating_sub(copies);
        let mut errors: Vec<String> = run
            .leechers
            .iter()
            .filter_map(|l| l.error.clone())
            .collect();
        errors.sort();
        errors.dedup();
        Self {
            scenario: scenario.name.clone(),
            distribution,
            leechers,
            blob_bytes: size,
            correct,
            crashed: run.leechers.iter().filter(|l| l.crashed).count(),
            time_to_all_secs: time_to_all,
            fluid_bound_secs: bound,
            bound_ratio: time_to_all.map(|time| bound / time),
            p50_secs: percentile(0.50),
            p95_secs: percentile(0.95),
            p99_secs: percentile(0.99),
            seed_upload_copies: run.seed_sent as f64 / size as f64,
            from_seed_share: {
                let seed: u64 = run.leechers.iter().map(|l| l.from_seed).sum();
                let peers: u64 = run.leechers.iter().map(|l| l.from_peers).sum();
                seed as f64 / (seed + peers).max(1) as f64
            },
            redundant_bytes: redundant,
            redundant_share: redundant as f64 / copies.max(1) as f64,
            wall_secs: run.wall.as_secs_f64(),
            errors,
        }
    }
}

/// A plain-text table of `summaries`, one row each.
pub fn table(summaries: &[Summary]) -> String {
    let seconds = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.1}"));
    let mut out = format!(
        "{:<14} {:>5} {:>8} {:>8} {:>7} {:>6} {:>7} {:>7} {:>7} {:>10} {:>9} {:>7}\n",
        "scenario",
        "nodes",
        "correct",
        "T all s",
        "bound s",
        "bound/T",
        "p50 s",
        "p95 s",
        "p99 s",
        "seed up ×",
        "redundant",
        "wall s",
    );
    for s in summaries {
        let _ = writeln!(
            out,
            "{:<14} {:>5} {:>8} {:>8} {:>7.1} {:>6} {:>7} {:>7} {:>7} {:>10.2} {:>8.1}% {:>7.0}",
            s.scenario,
            s.leechers,
            s.correct,
            seconds(s.time_to_all_secs),
            s.fluid_bound_secs,
            s.bound_ratio.map_or("-".to_owned(), |r| format!("{r:.2}")),
            seconds(s.p50_secs),
            seconds(s.p95_secs),
            seconds(s.p99_secs),
            s.seed_upload_copies,
            100.0 * s.redundant_share,
            s.wall_secs,
        );
    }
    out
}

/// Line colours, one per run.
const COLOURS: [&str; 7] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
];

/// An SVG plot: for each run, the share of leechers finished against time
/// since the start, with each run's fluid bound as a dashed line.
pub fn svg(runs: &[RunResult]) -> String {
    let (width, height) = (760.0, 440.0);
    let (left, right, top, bottom) = (60.0, 190.0, 20.0, 50.0);
    let (plot_w, plot_h) = (width - left - right, height - top - bottom);
    let finishes: Vec<Vec<f64>> = runs
        .iter()
        .map(|run| {
            let mut times: Vec<f64> = run
                .leechers
                .iter()
                .filter(|l| l.correct)
                .filter_map(|l| l.finished())
                .map(|t| t.as_secs_f64())
                .collect();
            times.sort_by(f64::total_cmp);
            times
        })
        .collect();
    let latest = finishes
        .iter()
        .flatten()
        .copied()
        .chain(runs.iter().map(|r| r.scenario.fluid_bound().as_secs_f64()))
        .fold(1.0, f64::max);
    let step = nice_step(latest / 6.0);
    let x_max = (latest / step).ceil() * step;
    let x = |t: f64| left + plot_w * t / x_max;
    let y = |share: f64| top + plot_h * (1.0 - share);

    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        out,
        "<path d=\"M{left},{top} V{} H{}\" stroke=\"black\" fill=\"none\"/>",
        top + plot_h,
        left + plot_w
    );
    let mut tick = 0.0;
    while tick <= x_max + step / 2.0 {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(tick),
            top + plot_h + 18.0,
            tick
        );
        tick += step;
    }
    for share in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}%</text>",
            left - 6.0,
            y(share) + 4.0,
            share * 100.0
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">seconds since the start (virtual)</text>",
        left + plot_w / 2.0,
        height - 12.0
    );
    let _ = writeln!(
        out,
        "<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">leechers finished</text>",
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    for (index, (run, times)) in runs.iter().zip(&finishes).enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let total = run.leechers.len().max(1) as f64;
        let mut path = format!("M{:.1},{:.1}", x(0.0), y(0.0));
        for (done, time) in times.iter().enumerate() {
            let _ = write!(
                path,
                " H{:.1} V{:.1}",
                x(*time),
                y((done + 1) as f64 / total)
            );
        }
        let _ = writeln!(
            out,
            "<path d=\"{path}\" stroke=\"{colour}\" stroke-width=\"2\" fill=\"none\"/>"
        );
        let bound = x(run.scenario.fluid_bound().as_secs_f64());
        let _ = writeln!(
            out,
            "<path d=\"M{bound:.1},{top} V{}\" stroke=\"{colour}\" stroke-dasharray=\"4 4\" fill=\"none\"/>",
            top + plot_h
        );
        let legend_y = top + 16.0 + 20.0 * index as f64;
        let _ = writeln!(
            out,
            "<path d=\"M{},{legend_y} h24\" stroke=\"{colour}\" stroke-width=\"2\"/>\
             <text x=\"{}\" y=\"{:.1}\">{}</text>",
            left + plot_w + 16.0,
            left + plot_w + 46.0,
            legend_y + 4.0,
            run.scenario.name
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{:.1}\" fill=\"#555\">dashed: fluid bound</text>",
        left + plot_w + 16.0,
        top + 16.0 + 20.0 * runs.len() as f64
    );
    out.push_str("</svg>\n");
    out
}

/// Serializes a duration as seconds.
pub(crate) fn seconds<S: serde::Serializer>(value: &Duration, to: S) -> Result<S::Ok, S::Error> {
    to.serialize_f64(value.as_secs_f64())
}

/// Serializes an optional duration as seconds or null.
pub(crate) fn maybe_seconds<S: serde::Serializer>(
    value: &Option<Duration>,
    to: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => to.serialize_some(&value.as_secs_f64()),
        None => to.serialize_none(),
    }
}

/// A step of 1, 2 or 5 times a power of ten, at least `rough`.
fn nice_step(rough: f64) -> f64 {
    let power = 10f64.powf(rough.max(1e-9).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&step| step >= rough)
        .unwrap_or(10.0 * power)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_step(3.2), 5.0);
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(14.0), 20.0);
        assert_eq!(nice_step(50.0), 50.0);
    }
}
