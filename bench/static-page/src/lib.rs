//! The benchmark's ceiling for the web tier: the same SDK, runtime and HTTP path as
//! the counter component, minus the gateway call. Whatever the counter costs above
//! this is the gateway round trip and the store.

use spin_sdk::http::Request;

// Exported only from the wasm build, as in the counter component.
#[cfg_attr(target_family = "wasm", spin_sdk::http_service)]
#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
async fn handle(_request: Request) -> http::Response<String> {
    http::Response::builder()
        .status(200)
        .header("content-type", "text/plain; charset=utf-8")
        .header("cache-control", "no-store")
        .body("Hello World! I have been seen by 0.".to_owned())
        .expect("a valid status and headers")
}
