//! Shows a simulation's progress: a bar per round on a terminal, plain lines otherwise.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use strata_server::ServerEvent;
use tokio::sync::broadcast;

pub async fn follow(mut events: broadcast::Receiver<ServerEvent>, rounds: u64) {
    let terminal = std::io::stderr().is_terminal();
    let mut bar: Option<ProgressBar> = None;
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => break,
        };
        match event {
            ServerEvent::RoundStarted { round, training, evaluating } if terminal => {
                let label = if round == rounds {
                    "final evaluation".to_string()
                } else {
                    format!("round {}/{rounds}", round + 1)
                };
                let b = ProgressBar::new((training + evaluating) as u64);
                b.set_style(
                    ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} clients {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                b.set_prefix(label);
                bar = Some(b);
            }
            ServerEvent::ResultAccepted { .. } => {
                if let Some(b) = &bar {
                    b.inc(1);
                }
            }
            ServerEvent::RoundFinished(record) => {
                let pct = |x: Option<f64>| x.map(|v| format!("{:.2}%", v * 100.0)).unwrap_or_else(|| "-".into());
                let privacy = record
                    .privacy
                    .as_ref()
                    .map(|p| format!(" | ε {} (δ {:e})", p.epsilon.map_or("∞".into(), |e| format!("{e:.3}")), p.delta))
                    .unwrap_or_default()
                    + &record.dp_sgd_epsilon.map(|e| format!(" | DP-SGD ε ≤ {e:.3}")).unwrap_or_default();
                let line = format!(
                    "round {:>3}: global {} | personalized {} | after training {}{privacy} | {:.1} s",
                    record.round,
                    pct(record.global_accuracy),
                    pct(record.personalized_accuracy),
                    pct(record.personalized_accuracy_trained),
                    record.seconds
                );
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                if terminal {
                    eprintln!("{line}");
                }
            }
            ServerEvent::RunFinished => break,
            _ => {}
        }
    }
}
