//! A stand-in OpenTelemetry collector for the trace-export row: it takes OTLP/HTTP
//! exports and answers each with an empty success, so the row measures what
//! exporting costs the gateway, not what a collector does with the spans.

use std::convert::Infallible;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serves until the bench ends; answers the base URL to export to.
pub async fn start() -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(accept)),
            );
        }
    });
    Ok(url)
}

async fn accept(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the export whole, as a collector would, then say it was taken.
    let _ = request.into_body().collect().await;
    let mut response = Response::new(Full::new(Bytes::new()));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-protobuf"),
    );
    Ok(response)
}
