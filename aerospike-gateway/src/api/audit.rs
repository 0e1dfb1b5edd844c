//! `GET /v1/audit`: the counters next to a recount of the records they count.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use counter_api::{Audit, PagesAudit, Summary};
use counter_store::Store;
use counter_store::audit::audit_window;

use super::{AppState, Problem};
use crate::metrics::METRICS;

/// Counters next to a recount of the hit records: they differ only after a
/// gateway died between writing hits and counting them, or while hits are in
/// flight. Sets the drift gauges, and tells the store when they differ.
pub(super) async fn audit<S: Store>(
    State(state): State<Arc<AppState<S>>>,
) -> Result<Json<Audit>, Problem> {
    let hit_records = METRICS
        .timed("count_hit_records", state.store.count_hit_records())
        .await?;
    let summary = METRICS.timed("summary", state.store.summary()).await?;
    METRICS
        .audit_drift
        .set(summary.total_hits as i64 - hit_records.total_hits as i64);
    let since = audit_window(
        state.store.page_hit_retention(),
        std::time::SystemTime::now(),
    );
    let mut pages = METRICS
        .timed("page_audit", state.store.page_audit(since))
        .await?;
    METRICS.audit_page_drift.set(pages.drift.len() as i64);
    pages.drift.truncate(PagesAudit::MAX_DRIFT);
    let mut findings = state.store.findings().await;
    findings.extend(page_findings(&pages));
    let consistent = match state.store.hit_retention().0 {
        None => summary == hit_records,
        Some(window) => {
            findings.push(format!(
                "hit records expire {} s after they are written (HIT_RETENTION): the audit \
                 checks only that each counter holds at least its hit records, and repairs nothing",
                window.as_secs()
            ));
            holds_its_records(&summary, &hit_records)
        }
    };
    if !consistent || !pages.consistent {
        state.store.suspect_drift();
    }
    Ok(Json(Audit {
        consistent: consistent && pages.consistent,
        summary,
        hit_records,
        findings,
        pages,
    }))
}

/// The named counters' drift, one line a count, for a person.
fn page_findings(pages: &PagesAudit) -> impl Iterator<Item = String> {
    let drift = pages.drift.iter().map(|drift| match &drift.key {
        Some(key) => format!(
            "counter {key} holds {} hit(s) on {} but has {} page hit record(s) that day",
            drift.counted, drift.day, drift.hit_records
        ),
        None => format!(
            "the day total of {} holds {} hit(s) but that day has {} page hit record(s)",
            drift.day, drift.counted, drift.hit_records
        ),
    });
    let off_days = (pages.totals_off_days > 0).then(|| {
        format!(
            "{} counter(s) have a total that is not their imported base (if any) plus the sum of their days",
            pages.totals_off_days
        )
    });
    drift.chain(off_days)
}

/// Every counter counts at least the hit records still there: all that can be
/// checked once records expire.
fn holds_its_records(summary: &Summary, hit_records: &Summary) -> bool {
    summary.total_hits >= hit_records.total_hits
        && hit_records.servers.iter().all(|records| {
            summary
                .servers
                .iter()
                .find(|s| s.server == records.server)
                .is_some_and(|s| s.total >= records.total)
        })
}
