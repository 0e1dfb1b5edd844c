//! Named counters from a client's side: hits that carry their own id and are
//! retried with it until they are acknowledged.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use counter_api::PageRecorded;

/// How a page hit retried until acknowledged ended.
#[derive(Debug)]
pub enum PageAnswer {
    /// `201`: counted by this request; the hit's own number is `total`.
    Counted(PageRecorded),
    /// `200`, `duplicate: true`: counted already, by an earlier attempt.
    Duplicate(PageRecorded),
    /// Still not acknowledged when the client gave up.
    GaveUp,
}

/// `POST {web}/api/pages/{key}` with `Idempotency-Key: {id}`, sent again with the
/// same key and id after every failure (any status but 200 and 201, or no
/// answer) until it is acknowledged or `give_up_after` has passed. Failures are
/// counted by status in `errors` (0: no answer).
pub async fn post_page_hit_until_acknowledged(
    client: &reqwest::Client,
    web: &str,
    key: &str,
    id: &str,
    give_up_after: Duration,
    errors: &mut BTreeMap<u16, u64>,
) -> PageAnswer {
    let started = Instant::now();
    loop {
        let answer = client
            .post(format!("{web}/api/pages/{key}"))
            .header("Idempotency-Key", id)
            .send()
            .await;
        match answer {
            Ok(response) if matches!(response.status().as_u16(), 200 | 201) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                let recorded: PageRecorded = serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("{status} to a page hit: {e}: {body}"));
                assert_eq!(
                    recorded.duplicate,
                    status == 200,
                    "{status} to a page hit says duplicate: {}: {body}",
                    recorded.duplicate
                );
                return if recorded.duplicate {
                    PageAnswer::Duplicate(recorded)
                } else {
                    PageAnswer::Counted(recorded)
                };
            }
            Ok(response) => *errors.entry(response.status().as_u16()).or_default() += 1,
            Err(_) => *errors.entry(0).or_default() += 1,
        }
        if started.elapsed() > give_up_after {
            return PageAnswer::GaveUp;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The exact count a badge shows in its title, e.g. `hits: 1,234`.
pub fn badge_count(svg: &str) -> u64 {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
    let title = doc
        .descendants()
        .find(|n| n.has_tag_name("title"))
        .and_then(|n| n.text())
        .expect("a badge has a title");
    title
        .rsplit(' ')
        .next()
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("no count in {title:?}"))
}
