//! Showing a fetch's [`Progress`]: live bars on a terminal (the whole, and
//! one per source once there are several), JSON lines when asked, nothing
//! otherwise.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use p2pmodel_node::{Phase, Progress};
use tokio::sync::watch;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// A live bar on stderr.
    Bar,
    /// One JSON object per line on stdout, at most every 200 ms.
    Json,
    /// Nothing (stderr is not a terminal).
    Quiet,
}

impl Display {
    /// The bar on a terminal, JSON when asked, else quiet.
    pub fn choose(json: bool) -> Self {
        if json {
            Display::Json
        } else if std::io::stderr().is_terminal() {
            Display::Bar
        } else {
            Display::Quiet
        }
    }
}

/// Prints the last snapshot of a fetch that ended (JSON mode only: the bar
/// has been cleared and quiet stays quiet).
pub fn finish(display: Display, progress: &Progress) {
    if display == Display::Json {
        print_json_progress(progress);
    }
}

/// Follows `progress` until the channel closes or the task is aborted.
pub async fn show(display: Display, label: String, mut progress: watch::Receiver<Progress>) {
    match display {
        Display::Quiet => {}
        Display::Bar => {
            let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let bar = bars.add(ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{wide_bar:.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar.set_prefix(label);
            bar.enable_steady_tick(Duration::from_millis(200));
            let mut sources = SourceBars::new(bars);
            let _clear = ClearOnDrop(bar.clone());
            let mut resumed = 0;
            loop {
                let snapshot = progress.borrow_and_update().clone();
                let resumed_now = snapshot.resumed != resumed;
                bar.set_length(snapshot.total);
                bar.set_position(snapshot.done);
                if resumed_now {
                    // Rate and ETA count bytes moved in this run, not resumed ones.
                    resumed = snapshot.resumed;
                    bar.reset_eta();
                }
                bar.set_message(sources_line(&snapshot));
                sources.update(&snapshot);
                if progress.changed().await.is_err() {
                    return;
                }
            }
        }
        Display::Json => {
            let mut last_print = None::<Instant>;
            loop {
                let snapshot = progress.borrow_and_update().clone();
                let due = last_print.is_none_or(|at| at.elapsed() >= Duration::from_millis(200));
                if due || snapshot.phase == Phase::Complete {
                    print_json_progress(&snapshot);
                    last_print = Some(Instant::now());
                }
                if progress.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// One bar per source under the main one, each showing that source's
/// share of the whole; shown once a second source appears, and removed
/// from the terminal with the display.
struct SourceBars {
    bars: MultiProgress,
    shown: Vec<(String, ProgressBar)>,
}

impl SourceBars {
    fn new(bars: MultiProgress) -> Self {
        Self {
            bars,
            shown: Vec::new(),
        }
    }

    fn update(&mut self, progress: &Progress) {
        if progress.sources.len() < 2 {
            return;
        }
        for source in &progress.sources {
            let at = match self
                .shown
                .iter()
                .position(|(name, _)| *name == source.source)
            {
                Some(at) => at,
                None => {
                    let bar = self.bars.add(ProgressBar::new(progress.total));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "  {prefix:>24} [{bar:30.green/blue}] {bytes} {binary_bytes_per_sec}",
                        )
                        .expect("the template is valid")
                        .progress_chars("=> "),
                    );
                    bar.set_prefix(short_name(&source.source));
                    self.shown.push((source.source.clone(), bar));
                    self.shown.len() - 1
                }
            };
            let bar = &self.shown[at].1;
            bar.set_length(progress.total);
            bar.set_position(source.bytes);
        }
    }
}

impl Drop for SourceBars {
    fn drop(&mut self) {
        for (_, bar) in &self.shown {
            bar.finish_and_clear();
        }
    }
}

/// A source's name short enough for a bar: `peer …` and the peer id's
/// last 8 characters, or the mirror's origin.
fn short_name(source: &str) -> String {
    match source.strip_prefix("peer ") {
        Some(id) if id.len() > 8 => format!("peer …{}", &id[id.len() - 8..]),
        _ => source.to_owned(),
    }
}

/// Removes the bar from the terminal when the display task ends.
struct ClearOnDrop(ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

fn sources_line(progress: &Progress) -> String {
    match progress.phase {
        Phase::Probing => "probing sources".into(),
        Phase::Verifying => "verifying".into(),
        _ if progress.sources.len() > 1 => format!("from {} sources", progress.sources.len()),
        _ => String::new(),
    }
}

fn print_json_progress(progress: &Progress) {
    let line = serde_json::json!({
        "event": "progress",
        "phase": progress.phase,
        "done": progress.done,
        "total": progress.total,
        "resumed": progress.resumed,
        "bytes_per_second": progress.bytes_per_second,
        "sources": progress.sources,
    });
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
}
