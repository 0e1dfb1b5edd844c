//! The W3C trace context (`traceparent`, `tracestate`) of an incoming request,
//! passed on to the gateway call that carries its hit, so the gateway's spans
//! land in the same trace.
//!
//! Under `wasmtime serve` nothing else does this. Spin 4.0.2 with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set replaces both headers on every outgoing
//! request with those of its own client span; but for a WASIp3 component that
//! span is not in the incoming request's trace, it starts a trace of its own
//! (its parent would come from the current `tracing` span, and the host call of
//! a concurrent component runs outside the request's). So the call also names,
//! in its body, the `traceparent` of every hit it carries (see group_commit),
//! which no runtime rewrites. With tracing off, Spin leaves the headers as the
//! component set them.

use http::HeaderValue;

/// A valid `traceparent` and the `tracestate` that came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    traceparent: HeaderValue,
    tracestate: Option<HeaderValue>,
}

impl TraceContext {
    /// The caller's trace context, if it sent a valid `traceparent`: a malformed
    /// one would only be dropped by the gateway, so it is not passed on, and
    /// neither is a `tracestate` without one (as the W3C specification says).
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        let mut traceparents = headers.get_all("traceparent").iter();
        let traceparent = traceparents.next()?;
        if traceparents.next().is_some() || !is_traceparent(traceparent.as_bytes()) {
            return None;
        }
        // Several tracestate lines are one list (RFC 9110); the gateway reads one.
        let states: Vec<&[u8]> = headers
            .get_all("tracestate")
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        let tracestate = (!states.is_empty())
            .then(|| HeaderValue::from_bytes(&states.join(&b","[..])).ok())
            .flatten();
        Some(Self {
            traceparent: traceparent.clone(),
            tracestate,
        })
    }

    /// The `traceparent`, checked to be one.
    pub fn traceparent(&self) -> &str {
        self.traceparent
            .to_str()
            .expect("a valid traceparent is ASCII")
    }

    /// Adds the headers to an outgoing request.
    pub fn inject(&self, request: http::request::Builder) -> http::request::Builder {
        let request = request.header("traceparent", self.traceparent.clone());
        match &self.tracestate {
            Some(state) => request.header("tracestate", state.clone()),
            None => request,
        }
    }
}

/// `version-traceid-parentid-flags`, lowercase hex, as the W3C Trace Context
/// specification defines it: version `ff` and all-zero ids are invalid, and a
/// version after 00 may add fields after a dash.
fn is_traceparent(value: &[u8]) -> bool {
    let hex = |part: &[u8]| {
        part.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let Some(head) = value.get(..55) else {
        return false;
    };
    let fields: Vec<&[u8]> = head.split(|&b| b == b'-').collect();
    let [version, trace_id, parent_id, flags] = fields[..] else {
        return false;
    };
    let rest = &value[55..];
    let rest_ok = if version == b"00" {
        rest.is_empty()
    } else {
        rest.is_empty() || rest.first() == Some(&b'-')
    };
    version.len() == 2
        && trace_id.len() == 32
        && parent_id.len() == 16
        && flags.len() == 2
        && [version, trace_id, parent_id, flags].into_iter().all(hex)
        && version != b"ff"
        && trace_id.iter().any(|&b| b != b'0')
        && parent_id.iter().any(|&b| b != b'0')
        && rest_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn sent(context: &TraceContext) -> http::HeaderMap {
        context
            .inject(http::Request::builder())
            .body(())
            .unwrap()
            .headers()
            .clone()
    }

    #[test]
    fn a_valid_context_is_passed_on_whole() {
        let context = TraceContext::from_headers(&headers(&[
            ("traceparent", VALID),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("tracestate", "rojo=00f067aa0ba902b7"),
        ]))
        .expect("a valid traceparent");
        let out = sent(&context);
        assert_eq!(out["traceparent"], VALID);
        assert_eq!(out["tracestate"], "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");

        let bare = TraceContext::from_headers(&headers(&[("traceparent", VALID)])).unwrap();
        assert!(!sent(&bare).contains_key("tracestate"));
        // A later version may carry more fields.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(TraceContext::from_headers(&headers(&[("traceparent", future)])).is_some());
    }

    #[test]
    fn anything_else_is_not_passed_on() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(
                TraceContext::from_headers(&headers(&[("traceparent", bad)])),
                None,
                "{bad:?}"
            );
        }
        assert_eq!(
            TraceContext::from_headers(&headers(&[("tracestate", "congo=t61rcWkgMzE")])),
            None
        );
        assert_eq!(
            TraceContext::from_headers(&headers(&[("traceparent", VALID), ("traceparent", VALID)])),
            None,
            "two traceparents: which one is the caller's is unknown"
        );
    }
}
